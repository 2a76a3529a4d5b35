"""What runs record (failures, models with input examples) and how sweeps are tabulated; real SQLite stores."""

import json
import math

import keras
import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from helpers import find_runs
from pipeline import tracking
from pipeline.errors import DataError
from pipeline.evaluation import leaderboard
from pipeline.plots import viz


@pytest.fixture
def uri(tmp_path):
    return f"sqlite:///{tmp_path}/mlflow.db"


def test_failed_run_ends_failed_with_the_error_and_its_traceback(uri, tmp_path):
    with pytest.raises(ValueError, match="boom"):
        with tracking.run(uri, "failures", "job", str(tmp_path / "artifacts"), {"stage": "train"}):
            raise ValueError("boom: bad batch")
    client = MlflowClient(uri)
    [run] = find_runs(client, "failures")
    assert run.info.status == "FAILED"
    assert run.data.tags["error"] == "ValueError: boom: bad batch"
    text = mlflow.artifacts.load_text(f"{run.info.artifact_uri}/error/traceback.txt")
    assert "Traceback" in text and "ValueError: boom: bad batch" in text
    assert len(run.data.tags["git.commit"]) == 40 and run.data.tags["system.backend"] == keras.config.backend()


def test_model_is_logged_with_signature_and_input_example(uri, tmp_path):
    """The example is what a client sends (one image per row); MLflow's own check of it, its serving payload
    replayed through the loaded pyfunc, answers with masks at the images' size."""
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(2, 3, padding="same", activation="softmax")(inputs))
    example = np.random.default_rng(0).integers(0, 255, (2, 8, 8, 3)).astype(np.uint8)
    with tracking.run(uri, "models", "job", str(tmp_path / "artifacts")):
        model_uri = tracking.log_keras_model(model, example)
    info = mlflow.models.Model.load(model_uri)
    assert info.saved_input_example_info["type"] == "dataframe"
    saved = info.load_input_example(mlflow.artifacts.download_artifacts(model_uri))["images"]
    np.testing.assert_array_equal(np.asarray(saved.tolist()), example)
    assert info.signature.inputs.to_dict() == [{"type": "any", "name": "images", "required": True}]
    payload = mlflow.models.convert_input_example_to_serving_input(saved.to_frame())
    answers = mlflow.models.validate_serving_input(model_uri, payload)
    assert [np.asarray(a["mask"]).shape for a in answers] == [(8, 8), (8, 8)]


def test_retry_locked_retries_only_database_is_locked():
    calls = []

    @tracking.retry_locked
    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise mlflow.exceptions.MlflowException("(sqlite3.OperationalError) database is locked")
        return "written"

    assert flaky() == "written" and len(calls) == 3

    @tracking.retry_locked
    def broken():
        calls.append(1)
        raise mlflow.exceptions.MlflowException("no such table: runs")

    calls.clear()
    with pytest.raises(mlflow.exceptions.MlflowException, match="no such table"):
        broken()
    assert len(calls) == 1


def job(run_id, overrides, params, val, test=None, status="FINISHED", monitor="val_mean_iou", mode="max") -> dict:
    metrics = {} if val is None else {f"selection_{monitor}": val, "test_mean_iou": test}
    tags = {"overrides": json.dumps(overrides), "headline_metric": "test_mean_iou"}
    tags.update({"selection_metric": f"selection_{monitor}", "selection_mode": mode})
    return {"run_id": run_id, "run_name": "unet", "status": status, "tags": tags, "params": params, "metrics": metrics}


# validation and test disagree: b is chosen (best validation) although a has the better test score
RUNS = [
    job("a", ["optimizer.lr=1e-3", "model=unet", "trainer=debug"], {"optimizer.lr": "0.0010000000000000002"}, 0.5, 0.9),
    job("b", ["optimizer.lr=1e-2", "model=unet", "trainer=debug"], {"optimizer.lr": "0.01"}, 0.70, 0.6),
    job("c", ["optimizer.lr=1e-1", "model=segnet", "trainer=debug"], {"optimizer.lr": "0.1"}, None, None, "FAILED"),
]


def test_leaderboard_ranks_by_validation_with_the_test_score_beside_failed_last():
    table = leaderboard.leaderboard(RUNS)
    columns = ["run_id", "run_name", "status", "optimizer.lr", "model", "selection_val_mean_iou", "test_mean_iou"]
    assert list(table.columns) == columns
    assert list(table["run_id"]) == ["b", "a", "c"]  # by validation: the test ordering (a first) is ignored
    assert list(table["optimizer.lr"]) == ["0.01", "0.0010000000000000002", "0.1"]  # the param, not the override
    assert list(table["model"]) == ["unet", "unet", "segnet"]
    assert math.isnan(table["test_mean_iou"].iloc[2])
    markdown = leaderboard.to_markdown(table).splitlines()
    assert markdown[0] == "| " + " | ".join(columns) + " |"
    assert markdown[2] == "| b | unet | FINISHED | 0.01 | unet | 0.7000 | 0.6000 |"
    assert markdown[3] == "| a | unet | FINISHED | 0.001 | unet | 0.5000 | 0.9000 |"  # shortened for reading
    assert markdown[4].endswith("| segnet |  |  |")


def test_a_loss_monitor_ranks_lowest_first_and_runs_without_a_selection_are_refused():
    runs = [job("x", ["optimizer.lr=1"], {}, 0.30, 0.5, monitor="val_loss", mode="min"),
            job("y", ["optimizer.lr=2"], {}, 0.20, 0.4, monitor="val_loss", mode="min")]  # fmt: skip
    table = leaderboard.leaderboard(runs)
    assert list(table["run_id"]) == ["y", "x"] and table.attrs == {"metric": "selection_val_loss", "mode": "min"}
    for run in runs:
        del run["tags"]["selection_metric"]
    with pytest.raises(DataError, match="records the validation score"):
        leaderboard.leaderboard(runs)
    assert list(leaderboard.leaderboard(runs, "test_mean_iou")["run_id"]) == ["x", "y"]  # asked for by name


def test_metric_against_params_one_panel_per_param_log_axis_for_wide_ranges():
    figure = viz.metric_against_params({"optimizer.lr": ["0.001", "0.1"], "model": ["unet", "segnet"]}, [0.5, 0.7], "m")
    lr_axis, model_axis = figure.axes
    assert lr_axis.get_xscale() == "log" and model_axis.get_xscale() == "linear"
    assert [t.get_text() for t in model_axis.get_xticklabels()] == ["segnet", "unet"]
    viz.plt.close(figure)


def test_a_sweep_whose_validation_and_test_orderings_differ_is_ranked_by_validation(tmp_path):
    """Real store, crafted children: the summary, its best child and `cnn compare` follow validation; the
    test score (best by test: another child) is only shown beside."""
    import os
    import subprocess
    import sys

    from pipeline.sweeps import sweep

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    experiment = tracking.prepare_store(uri, "shapes", None)
    parent = tracking.start_parent_run(uri, experiment, "grid: lr", {"stage": "sweep"})
    client = MlflowClient(uri)
    scores = {"1e-3": (0.60, 0.90), "1e-2": (0.80, 0.70), "1e-1": (0.70, 0.95)}  # (validation, test)
    ids = {}
    for lr, (val, test) in scores.items():
        tags = {"mlflow.parentRunId": parent, "stage": "train", "overrides": json.dumps([f"optimizer.lr={lr}"]),
                "selection_metric": "selection_val_mean_iou", "selection_mode": "max",
                "headline_metric": "test_mean_iou"}  # fmt: skip
        run = client.create_run(experiment, tags=tags, run_name=f"lr={lr}")
        client.log_param(run.info.run_id, "optimizer.lr", lr)
        client.log_metric(run.info.run_id, "selection_val_mean_iou", val)
        client.log_metric(run.info.run_id, "test_mean_iou", test)
        client.set_terminated(run.info.run_id, "FINISHED")
        ids[lr] = run.info.run_id
    summary, files = sweep.write_summary(tracking.child_runs(uri, parent), tmp_path)
    assert summary["tags"]["best_run_id"] == ids["1e-2"]  # best validation, though 1e-1 has the best test score
    assert summary["metrics"] == {"best_selection_val_mean_iou": 0.80, "best_run_test_mean_iou": 0.70}
    assert "best selection_val_mean_iou (validation) first" in files[1].read_text().splitlines()[0]
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    shown = subprocess.run([sys.executable, "-m", "pipeline.commands.compare", parent], env=env, capture_output=True,
                           text=True, timeout=120)  # fmt: skip
    assert shown.returncode == 0, shown.stderr[-2000:]
    rows = [line.split()[0] for line in shown.stdout.splitlines()[2:5]]
    assert rows == [ids["1e-2"], ids["1e-1"], ids["1e-3"]]
