"""Interrupted training: SIGKILL then trainer.resume=true continues the same MLflow run with every epoch's
metrics exactly once and the weights' moving average carried on; SIGTERM and Ctrl-C mark the run KILLED in one
line; deterministic runs repeat their metrics; a NaN loss stops training with a message and a FAILED run. Real
subprocesses, real Keras, real SQLite stores."""

import re
import signal

import pytest
from mlflow.tracking import MlflowClient

from helpers import TINY, find_runs, run_here, run_stage, start_stage, wait_for_backup

pytestmark = pytest.mark.slow
EPOCHS = 3
# with the weights' moving average (optimizer.use_ema): a resumed run must continue the averages, not restart them
RUN = [*TINY, f"trainer.epochs={EPOCHS}", "trainer.deterministic=true", "trainer.verbose=0", "data.splits.train=32",
       "optimizer.use_ema=true"]  # fmt: skip
TEST_METRICS = ("test_mean_iou", "test_pixel_accuracy", "test_dice")


def only_run(project):
    client = MlflowClient(f"sqlite:///{project}/mlflow.db")
    [run] = find_runs(client, "shapes")
    return client, run


def steps(client, run, key="loss"):
    return sorted(m.step for m in client.get_metric_history(run.info.run_id, key))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    project = tmp_path_factory.mktemp("reference")
    result = run_stage("train", project, *RUN)
    assert result.returncode == 0, result.stderr[-3000:]
    return only_run(project)


def test_same_config_and_seed_give_the_same_metrics(tmp_path, reference):
    result = run_here("train", tmp_path, *RUN)
    assert result.returncode == 0, result.stderr[-3000:]
    _, run = only_run(tmp_path)
    _, first = reference
    for key in (*TEST_METRICS, "loss", "val_loss"):
        assert run.data.metrics[key] == first.data.metrics[key], key


def test_sigkilled_training_resumes_in_the_same_run(tmp_path, reference):
    process = start_stage(tmp_path, *RUN)
    wait_for_backup(tmp_path, process, epochs=1)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    client, killed = only_run(tmp_path)
    assert killed.info.status == "RUNNING"  # nothing can mark a SIGKILLed run; resuming it does
    result = run_stage("train", tmp_path, *RUN, "trainer.resume=true")
    assert result.returncode == 0, result.stderr[-3000:]
    client, run = only_run(tmp_path)  # still one run: the same one, finished
    assert run.info.run_id == killed.info.run_id and run.info.status == "FINISHED"
    for key in ("loss", "val_loss", "mean_iou", "val_mean_iou", "learning_rate"):
        assert steps(client, run, key) == list(range(EPOCHS)), key  # every epoch once: none lost, none twice
    assert steps(client, run, "num_params") == [0]
    _, uninterrupted = reference
    for key in (*TEST_METRICS, "loss", "val_loss"):
        assert run.data.metrics[key] == pytest.approx(uninterrupted.data.metrics[key], abs=1e-5), key
    assert not list(tmp_path.glob("outputs/resume/*"))  # a finished run leaves nothing to resume


@pytest.mark.parametrize("stop, line", [(signal.SIGTERM, "SIGTERM"), (signal.SIGINT, "Ctrl-C (SIGINT)")])
def test_sigterm_and_ctrl_c_mark_the_run_killed_in_one_line(tmp_path, stop, line):
    process = start_stage(tmp_path, *RUN)
    wait_for_backup(tmp_path, process, epochs=1)
    process.send_signal(stop)
    assert process.wait(timeout=60) == 128 + stop
    stderr = process.stderr.read()
    assert f"error: stopped by {line} (an open MLflow run was marked KILLED" in stderr and "Traceback" not in stderr
    _, run = only_run(tmp_path)
    assert run.info.status == "KILLED"


def test_nan_loss_stops_training_with_a_message(tmp_path):
    # weights pushed past float32's range by a huge step: no batch norm to rescale them, so the loss turns NaN
    huge = ["optimizer=sgd", "optimizer.lr=1e30", "optimizer.schedule=constant", "model.batch_norm=false"]
    result = run_here("train", tmp_path, *TINY, "trainer.verbose=0", *huge)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1, result.stderr[-3000:]
    assert re.search(r"loss is (nan|inf) at epoch \d+, step \d+ \(learning rate 1e\+30 at that step", errors[0])
    assert "optimizer.lr=1e+30); training stopped" in errors[0] and "valid: a smaller optimizer.lr" in errors[0]
    _, run = only_run(tmp_path)
    assert run.info.status == "FAILED"
    assert not (tmp_path / "outputs" / "checkpoints").exists() and not list(tmp_path.glob("outputs/*/*/checkpoints"))
