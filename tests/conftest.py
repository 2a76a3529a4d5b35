"""Shared helpers: real Hydra composition and real CLI subprocesses against a temporary project root."""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import keras
import pytest
from hydra import compose, initialize_config_dir

from pipeline.config import conf_dir

TINY = [
    "trainer=debug",
    "trainer.epochs=2",
    "model.depth=2",
    "model.base_filters=4",
    "tracking.num_examples=2",
]


@pytest.fixture(autouse=True)
def float32_policy():
    """A stage run in-process sets Keras' global dtype policy (trainer.precision=auto may pick bfloat16):
    put float32 back, so later tests compute at the precision they assume."""
    yield
    keras.config.set_dtype_policy("float32")


@pytest.fixture
def compose_config():
    """compose_config(overrides) -> the resolved DictConfig the train stage would get (no Hydra run dir)."""

    def _compose(overrides=()):
        with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
            return compose(config_name="config", overrides=list(overrides), return_hydra_config=False)

    return _compose


@pytest.fixture
def project(tmp_path: Path):
    """A temporary project root: its own data/, outputs/ and a SQLite MLflow store."""
    return tmp_path


def run_stage(
    stage: str, project: Path, *overrides: str, timeout: int = 300, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Run `python -m pipeline.<stage>` with paths.root=project and a SQLite store in it (or `env`'s
    MLFLOW_TRACKING_URI)."""
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{project}/mlflow.db",
        "HYDRA_FULL_ERROR": "0",
        **(env or {}),
    }
    command = [sys.executable, "-m", f"pipeline.commands.{stage}", f"paths.root={project}", *overrides]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)


def train_run(project: Path, *overrides: str, experiment: str | None = None):
    """Run the train stage; (client, the train run) of its store."""
    from mlflow.tracking import MlflowClient

    result = run_stage("train", project, *overrides, "trainer.verbose=0")
    assert result.returncode == 0, result.stderr[-4000:]
    client = MlflowClient(f"sqlite:///{project}/mlflow.db")
    experiments = [e.experiment_id for e in client.search_experiments()]
    [run] = client.search_runs(experiments, "tags.stage = 'train'", max_results=1)
    return client, run


@pytest.fixture(scope="session")
def tiny_unet(tmp_path_factory):
    """(project, client, run) of one tiny shapes U-Net, trained once per test session and shared by the
    tests that read a trained run (train records, evaluate, predict, visualize)."""
    project = tmp_path_factory.mktemp("tiny_unet")
    tiny = [*TINY, "optimizer.lr=0.002", "model.base_filters=6", "tracking.system_metrics=0.5"]
    return project, *train_run(project, *tiny)


@pytest.fixture(scope="session")
def lenet5_digits(tmp_path_factory):
    """(project, client, run) of LeNet-5 trained one epoch on the bundled digits, once per session."""
    project = tmp_path_factory.mktemp("lenet5_digits")
    return project, *train_run(project, "experiment=digits_lenet5", "trainer.epochs=1")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(url: str, process: subprocess.Popen, log: Path, seconds: float = 120) -> None:
    """Until `url` answers 200; fails with the server's log if it exits or the time runs out."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"{url} did not answer: {log.read_text()[-3000:]}")
        time.sleep(0.5)


@contextlib.contextmanager
def mlflow_server(backend_uri: str, artifacts: Path, log: Path):
    """`mlflow server` on a free loopback port over `backend_uri`; its URL; stopped (its process group) after."""
    port = free_port()
    command = [
        *(sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"),
        *("--backend-store-uri", backend_uri, "--artifacts-destination", str(artifacts)),
    ]
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_for(f"{url}/health", process, log)
            yield url
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=5)  # uvicorn may wait on open browser connections
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
