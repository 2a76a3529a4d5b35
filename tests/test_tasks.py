"""Every stage serves every task: a classifier and a localizer trained by the train stage, then scored by
evaluate and applied by predict, through the real CLI and a real MLflow store; the task registry itself."""

import csv

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from helpers import run_here
from pipeline.tasks import TASKS, direction, get_task, unique_names


def read_run(project, experiment, stage="train"):
    """The newest run of a stage in an experiment."""
    client = MlflowClient(f"sqlite:///{project}/mlflow.db")
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    [run] = client.search_runs([experiment_id], f"tags.stage = '{stage}'", max_results=1)
    return client, run


@pytest.fixture
def classifier(lenet5_digits):
    """LeNet-5 trained one epoch on the bundled digits (1,257 training images), shared by the session."""
    return lenet5_digits


@pytest.fixture(scope="module")
def localizer(tmp_path_factory):
    project = tmp_path_factory.mktemp("localizer")
    splits = ["data.splits.train=48", "data.splits.val=8", "data.splits.test=12"]
    result = run_here("train", project, "experiment=shapes_localization", "trainer.epochs=1", *splits)
    assert result.returncode == 0, result.stderr[-3000:]
    return project, *read_run(project, "shapes_loc")


def test_every_task_has_what_the_stages_ask_for():
    for name in TASKS:
        task = get_task(name)
        from pipeline.tasks.targets import TARGETS

        assert task.name == name and task.target in TARGETS
        # scores are maximised, errors (regression's mae) minimised: the monitor and the headline agree
        assert task.monitor.startswith("val_") and direction(task.monitor) == direction(task.headline)
        for method in ("loss_and_metrics", "check_targets", "tally", "outputs", "predict", "explain"):
            assert callable(getattr(task, method)), (name, method)


@pytest.mark.parametrize(
    ("monitor", "expected"),
    [("val_loss", "min"), ("loss", "min"), ("val_mae", "min"), ("val_mean_iou", "max"), ("val_accuracy", "max")],
)
def test_losses_are_minimised_and_scores_maximised(monitor, expected):
    assert direction(monitor) == expected


def test_outputs_of_inputs_that_share_a_stem_never_collide(tmp_path):
    paths = [tmp_path / name for name in ("photo.png", "photo.jpg", "photo_png.jpg", "other.png")]
    names = unique_names(paths)
    assert names == ["photo_png", "photo_jpg", "photo_png_2", "other"] and len(set(names)) == len(paths)


def test_evaluate_reproduces_a_classifiers_test_accuracy_exactly(classifier):
    project, client, run = classifier
    result = run_here("evaluate", project, f"source={run.info.run_id}")
    assert result.returncode == 0, result.stderr[-3000:]
    _, evaluation = read_run(project, "digits", "evaluate")
    assert evaluation.data.tags["mlflow.parentRunId"] == run.info.run_id
    assert evaluation.data.metrics["test_accuracy"] == run.data.metrics["test_accuracy"]
    assert evaluation.data.metrics["test_recall_7"] == run.data.metrics["test_recall_7"]
    plots = {a.path for a in client.list_artifacts(evaluation.info.run_id, "plots")}
    assert {"plots/confusion_matrix.png", "plots/test_predictions.png"} <= plots
    # the classifier was trained one epoch: it makes mistakes, and the surest of them are pictured
    assert run.data.metrics["test_accuracy"] < 1 and "plots/worst_errors.png" in plots


def test_predict_on_png_digits_matches_evaluate(classifier, tmp_path):
    """The test split written as PNG files: predict's labels are evaluate's, image by image."""
    from hydra import compose, initialize_config_dir

    from pipeline.config import conf_dir
    from pipeline.data.sources import load_data, prepare_data

    project, client, run = classifier
    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        cfg = compose("config", ["experiment=digits_lenet5"])
    images, labels = load_data(cfg.data, prepare_data(cfg.data), "test")
    folder = tmp_path / "digits"
    folder.mkdir()
    for i, image in enumerate(images):
        Image.fromarray(image[..., 0]).save(folder / f"{i:03d}.png")  # grey PNGs, as a user's scans would be
    out = tmp_path / "out"
    result = run_here("predict", project, f"source={run.info.run_id}", f"input_dir={folder}", f"output_dir={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert list(rows[0]) == ["file", "label", *[str(c) for c in range(10)]]
    assert len(rows) == len(images) and (out / "contact_sheet.png").is_file()
    assert all(abs(sum(float(row[str(c)]) for c in range(10)) - 1) < 1e-4 for row in rows)

    assert "in experiment 'digits', nested under run" in result.stdout + result.stderr  # not 'predictions'
    run_here("evaluate", project, f"source={run.info.run_id}")  # (the test above may not have run)
    [evaluation, *_] = client.search_runs([run.info.experiment_id], "tags.stage = 'evaluate'")
    evaluated = list(csv.DictReader(open(client.download_artifacts(evaluation.info.run_id, "predictions.csv"))))
    assert [row["label"] for row in rows] == [row["label"] for row in evaluated]
    accuracy = np.mean([row["label"] == str(label) for row, label in zip(rows, labels)])
    assert accuracy == pytest.approx(run.data.metrics["test_accuracy"], abs=1e-9)


def test_a_localizer_is_evaluated_and_its_boxes_drawn(localizer, tmp_path):
    project, client, run = localizer
    assert 0.0 <= run.data.metrics["test_box_iou"] <= 1.0 and "val_box_iou" in run.data.metrics
    result = run_here("evaluate", project, f"source={run.info.run_id}")
    assert result.returncode == 0, result.stderr[-3000:]
    _, evaluation = read_run(project, "shapes_loc", "evaluate")
    assert evaluation.data.metrics["test_box_iou"] == pytest.approx(run.data.metrics["test_box_iou"], abs=1e-6)
    folder = tmp_path / "photos"
    folder.mkdir()
    sizes = [(64, 64), (100, 60)]
    for i, (w, h) in enumerate(sizes):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (h, w, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    out = tmp_path / "out"
    result = run_here("predict", project, f"source={run.info.run_id}", f"input_dir={folder}", f"output_dir={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = list(csv.DictReader((out / "boxes.csv").open()))
    assert [row["file"] for row in rows] == ["0.png", "1.png"]  # each file as found in input_dir
    for row, (w, h) in zip(rows, sizes):  # pixels of the original image
        assert (
            0 <= float(row["x_min"]) <= float(row["x_max"]) <= w
            and 0 <= float(row["y_min"]) <= float(row["y_max"]) <= h
        )
        assert Image.open(out / "boxes" / row["file"]).size == (w, h)  # drawn under the input's stem


def test_gaussian_tile_weights_favour_a_tiles_centre_and_flat_ones_do_not():
    from pipeline.tasks.segmentation import tile_weights

    gaussian, flat = tile_weights(64, 64, "gaussian")[..., 0], tile_weights(64, 64, "flat")[..., 0]
    assert gaussian[31:33, 31:33].min() > 0.99 and gaussian[0, 0] < 0.01 and gaussian.min() > 0
    np.testing.assert_allclose(gaussian[:, 10], gaussian[10, :])  # square tile: the same along both axes
    # sigma = tile / 8 (MONAI's sigma_scale 0.125), centre at 31.5, scaled so the four central pixels weigh 1
    peak = np.exp(-((0.5 / 8) ** 2))
    assert gaussian[32, 40] == pytest.approx(np.exp(-0.5 * (8.5 / 8) ** 2 - 0.5 * (0.5 / 8) ** 2) / peak, rel=1e-4)
    assert (flat == 1).all()


def test_overlays_leave_only_the_background_class_untinted():
    from pipeline.tasks.segmentation import overlay

    image = np.full((2, 2, 3), 100, np.uint8)
    labels = np.array([[0, 1], [2, 0]])
    default = overlay(image, labels, 3)
    assert (default[0, 0] == 100).all() and not (default[0, 1] == 100).all()
    every = overlay(image, labels, 3, background=None)  # class 0 is a real class: tinted too
    assert not (every[0, 0] == 100).all()
    other = overlay(image, labels, 3, background=2)
    assert (other[1, 0] == 100).all() and not (other[0, 0] == 100).all()


def test_every_task_names_a_kind_of_target_and_each_kind_moves_with_its_crop():
    from pipeline.tasks import TASKS, get_task
    from pipeline.tasks.targets import TARGETS, target_of

    assert {get_task(name).target for name in TASKS} == set(TARGETS)
    mask = np.arange(64).reshape(8, 8)
    assert target_of("mask").crop(mask, 2, 3, 4, 8, 8).tolist() == mask[2:6, 3:7].tolist()
    # the box (2, 2)-(6, 6) of an 8 x 8 image, seen from the 4 x 4 window at (2, 2): the whole window
    box = target_of("boxes").crop([0.25, 0.25, 0.75, 0.75], 2, 2, 4, 8, 8)
    np.testing.assert_allclose(box, [0, 0, 1, 1])
    assert target_of("label").crop(3, 2, 2, 4, 8, 8) == 3
    assert target_of("boxes").placeholder(8, 8).shape == (1, 4) and target_of("mask").placeholder(8, 6).shape == (
        1,
        8,
        6,
    )
