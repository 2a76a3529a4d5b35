"""The train stage on a classification set: digits + LeNet-5 through the real CLI and MLflow store."""

import pytest
from mlflow.tracking import MlflowClient

from helpers import find_runs, run_here


def read_run(project, experiment):
    client = MlflowClient(f"sqlite:///{project}/mlflow.db")
    [run] = find_runs(client, experiment)
    return client, run


def test_digits_lenet5_one_epoch_logs_classification_metrics(lenet5_digits):
    _, client, run = lenet5_digits
    metrics = run.data.metrics
    assert run.data.tags["task"] == "classification" and run.data.tags["model"] == "lenet5"
    for key in ("test_accuracy", "test_top3_accuracy", "test_precision_7", "test_recall_7", "val_accuracy"):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert metrics["test_top3_accuracy"] >= metrics["test_accuracy"]
    assert metrics["num_params"] == 61_706  # 32x32x1 digits, 10 classes
    plots = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert {"plots/test_predictions.png", "plots/confusion_matrix.png", "plots/training_curves.png"} <= plots


def test_segmentation_model_on_a_classification_set_is_refused(project):
    result = run_here("train", project, "data=digits", "model=unet", "trainer=debug")
    assert result.returncode == 2
    expected = "model.name=unet is a segmentation model but data=digits is a classification set"
    assert f"{expected}; valid for classification: lenet5" in result.stderr


@pytest.mark.quality  # the full 100-epoch recipe: `make quality`, with the other full-length runs
def test_digits_lenet5_stays_near_its_measured_accuracy(project):
    # measured 0.972-0.989 over seeds 42, 1, 2, 3 since each sample draws its own augmentation (README;
    # 0.986-0.994 before); one test image is 0.28 points and CPU kernels are not bit-reproducible run to
    # run, so the regression line sits one error-pair below the lowest (seed 42, the default)
    result = run_here("train", project, "experiment=digits_lenet5", "trainer.verbose=0")
    assert result.returncode == 0, result.stderr[-3000:]
    _, run = read_run(project, "digits")
    assert run.data.metrics["test_accuracy"] >= 0.966, run.data.metrics["test_accuracy"]


def test_shift_curve_is_logged_with_the_shift_as_step(project):
    result = run_here(
        "train",
        project,
        "experiment=shift_invariance",
        "model=convnet_gap",
        "trainer.epochs=1",
        "trainer.verbose=0",
        "data.splits.train=60",
        "data.splits.val=12",
        "data.splits.test=12",
        "data.test_shifts=[0,8,16]",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    client, run = read_run(project, "shift_invariance")
    history = client.get_metric_history(run.info.run_id, "shift_accuracy")
    assert sorted(m.step for m in history) == [0, 8, 16]
    assert "plots/accuracy_vs_shift.png" in {a.path for a in client.list_artifacts(run.info.run_id, "plots")}


def test_googlenet_trains_with_its_auxiliary_heads(project):
    result = run_here(
        "train",
        project,
        "data=digits",
        "model=googlenet",
        "model.aux_heads=true",
        "model.width=0.0625",
        "data.k_per_class=20",  # 200 training images: the heads' outputs and metrics, not their accuracy
        "trainer.epochs=1",
        "trainer.verbose=0",
        "tracking.log_model=false",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    _, run = read_run(project, "digits")
    assert "val_predictions_accuracy" in run.data.metrics and "test_accuracy" in run.data.metrics
    assert run.data.tags["model"] == "googlenet"
