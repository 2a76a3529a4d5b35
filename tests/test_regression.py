"""The regression task (the lecture's "classification or regression based on extracted features"): the
fraction of each shapes image that circles, squares and triangles cover, trained, evaluated, predicted and
swept through the command line."""

import csv

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image
from sklearn.metrics import mean_absolute_error, r2_score

from helpers import find_runs, run_here, train_run
from pipeline.tasks.regression import regression_scores

REGRESSION = ["experiment=shapes_regression", "trainer=debug", "trainer.epochs=2", "tracking.num_examples=2",
              "model.backbone_options.filters=4"]  # fmt: skip


@pytest.fixture(scope="module")
def regressor(tmp_path_factory):
    project = tmp_path_factory.mktemp("regression")
    return project, *train_run(project, *REGRESSION, experiment="shapes_cover")


def test_the_scores_match_scikit_learn():
    rng = np.random.default_rng(0)
    truth = rng.uniform(0, 0.3, (50, 3))
    predicted = truth + rng.normal(0, 0.05, truth.shape)
    scores = regression_scores(truth, predicted, ["circle", "square", "triangle"])
    assert scores["mae"] == pytest.approx(mean_absolute_error(truth, predicted))
    assert scores["r2"] == pytest.approx(r2_score(truth, predicted))  # uniform_average over the outputs
    assert scores["mae_square"] == pytest.approx(mean_absolute_error(truth[:, 1], predicted[:, 1]))
    constant = np.full((4, 1), 0.2)  # scikit-learn's convention for an output constant in the truth
    assert regression_scores(constant, constant, ["c"])["r2"] == r2_score(constant, constant) == 1.0
    assert regression_scores(constant, constant + 0.1, ["c"])["r2"] == r2_score(constant, constant + 0.1) == 0.0


def test_a_regressor_trains_and_records_its_scores(regressor):
    project, client, run = regressor
    metrics, tags = run.data.metrics, run.data.tags
    assert tags["task"] == "regression" and tags["selection_mode"] == "min"
    assert tags["selection_metric"] == "selection_val_mae"
    assert {"test_mae", "test_rmse", "test_r2", "test_mae_circle", "selection_val_mae"} <= set(metrics)
    assert 0 <= metrics["test_mae"] <= metrics["test_rmse"] < 1  # fractions: an error is at most 1
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert "plots/predicted_vs_true.png" in artifacts


def test_evaluate_scores_the_run_again_in_a_nested_run(regressor):
    project, client, run = regressor
    result = run_here("evaluate", project, f"source={run.info.run_id}")
    assert result.returncode == 0, result.stderr[-3000:]
    [evaluation] = find_runs(client, "shapes_cover", "tags.stage = 'evaluate'")
    assert evaluation.data.tags["mlflow.parentRunId"] == run.info.run_id
    # the same model on the same test images: the same score (float32 arithmetic, batched alike)
    assert evaluation.data.metrics["test_mae"] == pytest.approx(run.data.metrics["test_mae"], abs=1e-4)
    assert "predictions.csv" in {a.path for a in client.list_artifacts(evaluation.info.run_id)}


def test_predict_writes_one_row_per_image_with_a_value_per_output(regressor, tmp_path):
    project, client, run = regressor
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i, size in enumerate([(64, 64), (90, 50), (40, 120)]):
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(folder / f"photo{i}.png")
    out = tmp_path / "out"
    result = run_here("predict", project, f"source={run.info.run_id}", f"input_dir={folder}", f"output_dir={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = list(csv.reader((out / "predictions.csv").open()))
    assert rows[0] == ["file", "circle", "square", "triangle"]
    assert sorted(row[0] for row in rows[1:]) == ["photo0.png", "photo1.png", "photo2.png"]
    assert all(0 <= float(v) <= 1 for row in rows[1:] for v in row[1:])  # sigmoid outputs: fractions


def test_a_crop_is_refused_for_a_regression_target():
    """A window of the image covers other fractions than the image: the target cannot follow a crop."""
    from pipeline.errors import ConfigError
    from pipeline.tasks.targets import target_of

    with pytest.raises(ConfigError, match="data.fit=crop changes what a regression target measures"):
        target_of("values").crop(np.array([0.1, 0.2, 0.0]), 0, 0, 32, 64, 64)
    assert not target_of("values").croppable and target_of("mask").croppable


@pytest.mark.slow
def test_a_sweep_of_regressors_is_ranked_by_the_lowest_validation_error(tmp_path):
    result = run_here("train", tmp_path, *REGRESSION, "optimizer.lr=1e-3,1e-2", "--multirun")
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    [parent] = find_runs(client, "shapes_cover", "tags.stage = 'sweep'")
    children = find_runs(client, "shapes_cover", f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(children) == 2
    best = min(children, key=lambda r: r.data.metrics["selection_val_mae"])
    assert parent.data.tags["best_run_id"] == best.info.run_id  # the lowest error, not the highest
    assert parent.data.metrics["best_selection_val_mae"] == pytest.approx(best.data.metrics["selection_val_mae"])


def test_the_regressor_averages_its_features_over_the_image():
    """Coverage is a share of the image: global average pooling (model.global_pool=avg) feeds the head."""
    from pipeline.errors import ConfigError
    from pipeline.models import build_model

    options = {"n": 1, "m": 2, "k": 0, "filters": 4, "global_pool": "avg"}
    model = build_model("regressor", (16, 16, 3), 3, backbone="convnet", backbone_options=options)
    assert type(model.get_layer("global_pool")).__name__ == "GlobalAveragePooling2D"
    assert model.output.shape == (None, 3) and model.layers[-1].name == "values"
    with pytest.raises(ConfigError, match=r"model.global_pool='mean' is invalid; valid: false, true \(max\), max"):
        build_model("convnet", (16, 16, 3), 3, global_pool="mean")
