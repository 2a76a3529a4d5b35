"""Where a run came from: the code's git state and the software and devices it ran on (tags of every run)."""

import functools
import os
import platform
import socket
import subprocess
from pathlib import Path

import keras


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


@functools.cache
def git_state(root: Path) -> dict[str, str]:
    """git.commit and git.dirty (uncommitted changes to tracked files) of the checkout; {} outside git."""
    commit = _git(root, "rev-parse", "HEAD")
    if commit is None:
        return {}
    changes = _git(root, "status", "--porcelain", "--untracked-files=no")
    return {"git.commit": commit, "git.dirty": str(bool(changes)).lower()}


@functools.cache
def system_info() -> dict[str, str]:
    """Python, Keras and backend versions, the backend, and the devices it sees."""
    backend = keras.config.backend()
    info = {"system.python": platform.python_version(), "system.keras": keras.__version__, "system.backend": backend}
    if backend == "tensorflow":
        import tensorflow as tf

        info["system.tensorflow"] = tf.__version__
        devices = [d.name for d in tf.config.list_logical_devices()]
    elif backend == "jax":
        import jax

        info["system.jax"] = jax.__version__
        devices = [str(d) for d in jax.devices()]
    else:
        import torch

        info["system.torch"] = torch.__version__
        devices = ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    info["system.devices"] = ", ".join(devices)
    info["system.platform"] = platform.platform()
    return info


def process_info() -> dict[str, str]:
    """Which machine and process ran it, and its cluster job (SLURM), so a sweep's jobs can be told apart."""
    info = {"system.host": socket.gethostname(), "system.pid": str(os.getpid())}
    if "SLURM_JOB_ID" in os.environ:
        info["system.slurm_job_id"] = os.environ["SLURM_JOB_ID"]
    return info


def run_tags(root: Path) -> dict[str, str]:
    return {**git_state(root), **system_info(), **process_info()}
