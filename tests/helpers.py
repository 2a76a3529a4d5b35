"""What the tests share besides fixtures: running a stage as its command line, finding the runs it recorded,
and servers started on loopback (imported as `from helpers import ...`; conftest.py holds only fixtures)."""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

TINY = [
    "trainer=debug",
    "trainer.epochs=2",
    "model.depth=2",
    "model.base_filters=4",
    "tracking.num_examples=2",
]


def stage_environment(project: Path, env: dict | None = None) -> dict:
    """What a stage run by a test sees on top of the environment: the project's SQLite store, one-line errors."""
    return {"MLFLOW_TRACKING_URI": f"sqlite:///{project}/mlflow.db", "HYDRA_FULL_ERROR": "0", **(env or {})}


def run_stage(
    stage: str, project: Path, *overrides: str, timeout: int = 300, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Run `python -m pipeline.<stage>` with paths.root=project and a SQLite store in it (or `env`'s
    MLFLOW_TRACKING_URI)."""
    env = {**os.environ, **stage_environment(project, env)}
    command = [sys.executable, "-m", f"pipeline.commands.{stage}", f"paths.root={project}", *overrides]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)


def run_here(stage: str, project: Path, *overrides: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """The command line `cnn <stage> paths.root=project <overrides>` run in this process, as run_stage runs it
    in a new one (same environment, same exit status, its stdout and stderr), so a test does not spend ten seconds
    of a new process importing TensorFlow. run_stage stays for what only a process shows: its exit status from the
    interpreter, signals, another backend (KERAS_BACKEND), a kill and resume. What a run leaves in the process is
    set as a new process would find it, before and after:
    - Keras' session is cleared first (layer-name counters and graphs, as in a fresh interpreter);
    - Keras' global dtype policy, which a stage sets (mixed_bfloat16 where the CPU has it), is put back;
    - MLflow's global tracking URI, which a stage sets, is put back, and a run the stage left active fails the test;
    - Hydra's logging set-up (dictConfig) closes every handler ever made, and absl's handler (made when this
      process imported TensorFlow) closes its stream unless that is the sys.stderr of the moment: its stream is
      pointed at the captured stderr meanwhile, or it would close pytest's own capture."""
    import importlib
    import io
    from unittest import mock

    import mlflow
    from mlflow.tracking._tracking_service import utils as tracking

    module = importlib.import_module(f"pipeline.commands.{stage}")

    argv = [f"cnn-{stage}", f"paths.root={project}", *overrides]
    out, err, status = io.StringIO(), io.StringIO(), 0
    absl = sys.modules.get("absl.logging")
    handler = absl.get_absl_handler().python_handler if absl else None
    stream = handler.stream if handler else None
    keras = sys.modules.get("keras")
    policy = keras.config.dtype_policy().name if keras else "float32"
    if keras:
        keras.backend.clear_session()
    uri = tracking._tracking_uri  # None unless set: then the environment's MLFLOW_TRACKING_URI decides
    left = None
    try:
        with mock.patch.dict(os.environ, stage_environment(project, env)), mock.patch.object(sys, "argv", argv):
            try:
                with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                    if handler:
                        handler.stream = err
                    module.main()
            finally:  # in the stage's environment: unsetting the URI unsets its MLFLOW_TRACKING_URI too
                left = mlflow.active_run()
                while mlflow.active_run():
                    mlflow.end_run("KILLED")
                mlflow.set_tracking_uri(uri)
    except SystemExit as stop:
        status = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    finally:
        if handler:
            handler.stream = stream
        if "keras" in sys.modules:
            sys.modules["keras"].config.set_dtype_policy(policy)
    assert left is None, f"cnn {stage} left MLflow run {left.info.run_id} active: {err.getvalue()[-2000:]}"
    return subprocess.CompletedProcess(argv, status, out.getvalue(), err.getvalue())


def train_run(project: Path, *overrides: str, experiment: str | None = None):
    """Run the train stage; (client, the train run) of its store."""
    from mlflow.tracking import MlflowClient

    result = run_here("train", project, *overrides, "trainer.verbose=0")
    assert result.returncode == 0, result.stderr[-4000:]
    client = MlflowClient(f"sqlite:///{project}/mlflow.db")
    [run] = find_runs(client, experiment, "tags.stage = 'train'", max_results=1)
    return client, run


def find_runs(client, experiment: str | None = None, where: str = "", **options) -> list:
    """The runs of `experiment` (by name; every experiment when None) that match the filter `where`, newest
    first: the one way the tests find what a stage recorded."""
    if experiment is None:
        ids = [e.experiment_id for e in client.search_experiments()]
    else:
        found = client.get_experiment_by_name(experiment)
        assert found is not None, f"no experiment {experiment!r} in the store"
        ids = [found.experiment_id]
    return client.search_runs(ids, where, **options)


def runs_left_running(project: Path) -> list:
    """The runs project/mlflow.db holds RUNNING. A store no stage created holds none, and is not created here:
    a fresh MLflow store's migrations take ~3.5 s, which every refused command's test would pay again."""
    store = Path(project) / "mlflow.db"
    if not store.exists():
        return []
    from mlflow.tracking import MlflowClient

    return [run for run in find_runs(MlflowClient(f"sqlite:///{store}")) if run.info.status == "RUNNING"]


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


ONNX_CLIENT = Path(__file__).with_name("onnx_client.py")


def onnx_client(model: Path, images: list[Path], out: Path):
    """Run tests/onnx_client.py (only the ONNX file, its metadata and Pillow/NumPy/ONNX Runtime) in an isolated
    Python; returns (its output, each image's argmax classes, the class names the file holds)."""
    import numpy as np

    command = [sys.executable, "-I", str(ONNX_CLIENT), str(model), str(out), *map(str, images)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=out.parent)
    assert done.returncode == 0, done.stderr[-3000:]
    found = np.load(out)
    return found["output"], found["classes"], list(found["names"])


def assert_same_masks_up_to_near_ties(masks, classes, probabilities, near: float, names) -> None:
    """cnn predict's masks against a client's argmax of its own probabilities: a pixel may differ only where
    the client's top two classes are closer than `near` (two precisions round a tie either way), and at least
    a tenth of the pixels are decisive, so the comparison is not vacuous on a near-uniform model."""
    import numpy as np

    decisive = total = 0
    for name, mask, mine, output in zip(names, masks, classes, probabilities, strict=True):
        top = np.sort(output, axis=-1)
        gap = top[..., -1] - top[..., -2]
        differ = mask != mine
        widest = gap[differ].max(initial=0)
        assert widest < near, f"{name}: {differ.sum()} pixels differ, one where the top two are {widest:.3g} apart"
        decisive, total = decisive + (gap >= near).sum(), total + gap.size
    assert decisive >= 0.1 * total, f"only {decisive} of {total} pixels have top two classes >= {near} apart"


def start_stage(project, *overrides) -> subprocess.Popen:
    env = {**os.environ, **stage_environment(project)}
    command = [sys.executable, "-m", "pipeline.commands.train", f"paths.root={project}", *overrides]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=default_ctrl_c)  # fmt: skip


def default_ctrl_c() -> None:
    """In the child: SIGINT as a terminal delivers it. A test run as a background job inherits it ignored, and
    Python then never turns it into KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def wait_for_backup(project, process, epochs: int, timeout: float = 240) -> None:
    """Until the resume backup says `epochs` epochs are done (the next one is then in flight)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for metadata in project.glob("outputs/resume/*/backup/training_metadata.json"):
            try:
                if json.loads(metadata.read_text())["epoch"] >= epochs:
                    return
            except (ValueError, OSError):  # being written
                pass
        assert process.poll() is None, process.stderr.read()[-3000:]
        time.sleep(0.05)
    raise AssertionError("training never reached the backup")


def save_resnet_preset(folder, converter: bool = False):
    """A small ResNet (basic blocks, 4 stages: pyramid P2..P5) with random weights, as its preset folder."""
    import keras_hub

    backbone = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[7], stackwise_num_filters=[64, 16, 32, 64],
        stackwise_num_blocks=[1, 1, 1, 1], stackwise_num_strides=[1, 2, 2, 2], block_type="basic_block",
        use_pre_activation=False, image_shape=(None, None, 3),
    )  # fmt: skip
    backbone.save_to_preset(str(folder))
    if converter:  # ImageNet's mean and deviation, per channel, as the ResNet presets carry them
        scale = [1 / (255 * s) for s in (0.229, 0.224, 0.225)]
        offset = [-m / s for m, s in zip((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))]
        keras_hub.layers.ResNetImageConverter(scale=scale, offset=offset).save_to_preset(str(folder))
    return folder
