"""The models, losses and metrics are written in keras.ops: every model config trains under JAX unchanged."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.config import group_options

SMOKE = Path(__file__).with_name("backend_smoke.py")
# XLA's CPU compiler without its costly LLVM optimisations: the step is the same computation, compiled in half
# the time (lenet5, vgg11 and unet: 13.5 s against 26.5 s in one process here), and how fast it runs once
# compiled does not matter to a test that takes one step
QUICK_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed (pip install 'jax[cpu]')")
def test_every_model_config_trains_one_step_under_jax():
    """The configs split over two processes, one per core here: each step's tracing and compiling is
    single-threaded work, so two halves take about half the time of one process doing all."""
    from backend_smoke import choices

    env = {**os.environ, "KERAS_BACKEND": "jax", "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} {QUICK_COMPILE}"}
    models = set(group_options("model"))
    trains = choices()
    halves = [trains[0::2], trains[1::2]]
    runs = [subprocess.Popen([sys.executable, str(SMOKE), *half], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for half in halves]  # fmt: skip
    outputs = [run.communicate(timeout=900) for run in runs]
    for run, (_, err) in zip(runs, outputs):
        assert run.returncode == 0, err[-3000:]
    lines = [line for out, _ in outputs for line in out.splitlines() if line.startswith("ok ")]
    trained = {line.split()[1] for line in lines}
    assert set(trains) == trained, f"not trained under jax: {set(trains) - trained}"
    assert models <= {choice.split(":")[0] for choice in trained}, "a model config is in no choice"
    assert all(" jax " in line for line in lines)
