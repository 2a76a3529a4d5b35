"""The train stage end to end: a real subprocess, real Keras training, a real SQLite MLflow store."""

import base64
import json
import re

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from helpers import TINY, find_runs, run_here


@pytest.fixture
def trained(tiny_unet):
    project, client, run = tiny_unet
    mlflow.set_tracking_uri(f"sqlite:///{project}/mlflow.db")
    return project, client, run


def test_run_finished_with_resolved_config_as_params(trained):
    project, _, run = trained
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["optimizer.lr"] == "0.002" and params["model.base_filters"] == "6"
    assert params["trainer.epochs"] == "2" and params["data.root"] == f"{project}/data/shapes_debug"
    assert params["tracking.uri"].startswith("sqlite:///")
    assert run.data.tags["model"] == "unet" and run.data.tags["stage"] == "train"


def test_epoch_metrics_are_logged_with_their_steps(trained):
    _, client, run = trained
    for key in ("loss", "val_loss", "mean_iou", "val_mean_iou", "learning_rate", "images_per_sec"):
        history = client.get_metric_history(run.info.run_id, key)
        assert sorted(m.step for m in history) == [0, 1], key


def test_the_training_run_records_system_metrics(trained):
    """MLflow's sampler (tracking.system_metrics=0.5 s here): CPU and memory, as system/* metrics over time."""
    _, client, run = trained
    for key in ("system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"):
        history = client.get_metric_history(run.info.run_id, key)
        assert len(history) >= 2, key
        assert all(m.value >= 0 for m in history), key
    memory = client.get_metric_history(run.info.run_id, "system/system_memory_usage_megabytes")
    assert max(m.value for m in memory) > 100  # a Python process with TensorFlow loaded: hundreds of MB at least


def test_test_metrics_under_their_documented_keys(trained):
    _, _, run = trained
    metrics = run.data.metrics
    for key in ("test_mean_iou", "test_pixel_accuracy", "test_dice", "test_iou_background"):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert metrics["num_params"] > 0
    # the held-out estimate with its 95 % bootstrap interval over the test images
    assert metrics["test_mean_iou_ci_low"] <= metrics["test_mean_iou"] <= metrics["test_mean_iou_ci_high"]
    assert metrics["test_mean_iou_ci_high"] - metrics["test_mean_iou_ci_low"] > 0


def test_artifacts_hold_config_pictures_and_checkpointed_model(trained):
    project, client, run = trained
    names = {a.path for a in client.list_artifacts(run.info.run_id, "config")}
    assert {"config/config.yaml", "config/overrides.yaml", "config/hydra.yaml"} <= names
    plots = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert {"plots/training_curves.png", "plots/test_predictions.png", "plots/confusion_matrix.png"} <= plots
    local = client.download_artifacts(run.info.run_id, "plots/test_predictions.png", str(project))
    assert open(local, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    # the data profile, taken before training: the debug set's 16 generated RGB images at batch 8
    assert {a.path for a in client.list_artifacts(run.info.run_id, "data")} >= {"data/profile.json", "data/profile.png"}
    profile = json.loads(open(client.download_artifacts(run.info.run_id, "data/profile.json", str(project))).read())
    assert profile["splits"]["train"]["count"] == 16 and profile["steps_per_epoch"] == 2
    assert sum(profile["splits"]["train"]["class_counts"].values()) == 16 * 32 * 32  # every pixel of every mask
    assert run.data.tags["data_warnings"] == str(len(profile["warnings"])) and run.data.tags["input_channels"] == "3"
    # the artifacts sit in the project's own folder, not wherever the command ran
    assert str(project / "mlartifacts") in client.get_experiment(run.info.experiment_id).artifact_location


def test_logged_model_has_a_signature_and_predicts(trained):
    project, client, run = trained
    [logged] = mlflow.search_logged_models(
        experiment_ids=[run.info.experiment_id],
        filter_string=f"source_run_id = '{run.info.run_id}'",
        output_format="list",
    )
    info = mlflow.models.get_model_info(logged.model_uri)
    assert info.signature.inputs.input_names() == ["images"]
    assert info.metadata["contract"]["input"]["shape"] == [None, 32, 32, 3]
    # the example is the first test files' bytes, base64: what a client sends
    example = mlflow.models.Model.load(logged.model_uri).load_input_example(
        mlflow.artifacts.download_artifacts(logged.model_uri)
    )["images"]
    [first, *_] = sorted((project / "data" / "shapes_debug" / "test" / "images").iterdir())
    assert base64.b64decode(example[0]) == first.read_bytes()
    import pipeline.training.losses  # noqa: F401  (registers the custom loss the logged model was compiled with)

    model = mlflow.keras.load_model(logged.model_uri)
    probabilities = model.predict(np.zeros((1, 32, 32, 3), np.float32), verbose=0)
    assert probabilities.shape == (1, 32, 32, 4)


def test_manifest_written_for_generated_data(trained):
    project, *_ = trained
    manifest = json.loads((project / "data" / "shapes_debug" / "manifest.json").read_text())
    assert manifest["counts"] == {"train": 16, "val": 8, "test": 8}


def assert_quiet_console(result):
    """What a train command prints to a pipe (a log file, CI): no TensorFlow C++ line (absl's `I0000 00:00:...
    port.cc:153] ...`, its preamble, the cuInit error of a GPU-less host), progress as plain lines without
    ANSI colours or backspaces, and an ending that says where the results are."""
    output = result.stdout + result.stderr
    cpp_line = re.compile(r"[IWEF]\d{4} \d\d:\d\d:\d\d|WARNING: All log messages")
    cpp = [line for line in output.splitlines() if cpp_line.match(line)]
    assert not cpp, cpp
    assert "\x1b[" not in output and "\b" not in output and "system_metrics_monitor" not in output
    assert re.search(r"\d+/\d+ - \d+s - .*val_loss: ", result.stdout), result.stdout[-2000:]  # one line an epoch
    last = [line for line in output.splitlines() if "][INFO] - " in line][-3:]
    assert any("checkpoint " in line and "job folder " in line for line in last), last
    assert any("FINISHED: http://127.0.0.1:5000/#/experiments/" in line for line in last), last


def test_monitoring_val_loss_keeps_the_epoch_with_the_lowest_val_loss(tmp_path):
    """trainer.monitor=val_loss is minimised: the kept checkpoint scores the lowest val_loss of the run (it
    kept the highest, the worst epoch, when every monitor was maximised)."""
    import keras
    from hydra import compose, initialize_config_dir

    import pipeline.training.losses  # noqa: F401 - registers the loss the checkpoint was compiled with
    from pipeline.config import conf_dir
    from pipeline.data.sources import load_data, prepare_data

    overrides = [
        *TINY,
        "trainer.epochs=4",
        "optimizer.lr=0.003",
        "trainer.monitor=val_loss",
        "trainer.precision=float32",
    ]
    result = run_here("train", tmp_path, *overrides)
    assert result.returncode == 0, result.stderr[-4000:]
    assert_quiet_console(result)
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    [run] = find_runs(client, "shapes", "tags.stage = 'train'")
    losses = [m.value for m in sorted(client.get_metric_history(run.info.run_id, "val_loss"), key=lambda m: m.step)]
    assert len(losses) == 4 and max(losses) - min(losses) > 1e-3  # the epochs differ, so the choice matters
    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        cfg = compose("config", [f"paths.root={tmp_path}", *overrides])
    images, masks = load_data(cfg.data, prepare_data(cfg.data), "val")
    [checkpoint] = tmp_path.glob("outputs/**/checkpoints/best.keras")
    kept = keras.models.load_model(checkpoint).evaluate(images.astype(np.float32), masks, batch_size=8, verbose=0)[0]
    closest = int(np.argmin([abs(kept - loss) for loss in losses]))
    assert closest == int(np.argmin(losses)), (kept, losses)
