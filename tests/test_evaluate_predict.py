"""Evaluate and predict stages on a model the train stage made: real subprocesses, a real MLflow store."""

import numpy as np
import pytest
from PIL import Image

from helpers import TINY, run_here


@pytest.fixture
def source(tiny_unet):
    return tiny_unet


def test_evaluate_reproduces_the_training_runs_test_scores_in_a_linked_run(source):
    project, client, run = source
    result = run_here("evaluate", project, f"source={run.info.run_id}")
    assert result.returncode == 0, result.stderr[-3000:]
    [evaluation] = client.search_runs([run.info.experiment_id], "tags.stage = 'evaluate'", max_results=1)
    assert evaluation.data.tags["mlflow.parentRunId"] == run.info.run_id
    for key in ("test_mean_iou", "test_dice", "test_pixel_accuracy", "test_iou_background"):
        assert evaluation.data.metrics[key] == pytest.approx(run.data.metrics[key], abs=1e-4), key
    plots = {a.path for a in client.list_artifacts(evaluation.info.run_id, "plots")}
    expected = {"confusion_matrix", "worst_predictions", "best_predictions", "test_predictions"}
    assert plots == {f"plots/{name}.png" for name in expected}


def test_evaluate_a_keras_file_with_flip_averaging(source):
    project, client, run = source
    [checkpoint] = project.glob("outputs/**/checkpoints/best.keras")
    result = run_here("evaluate", project, *TINY, f"source={checkpoint}", "tta=true", "split=val")
    assert result.returncode == 0, result.stderr[-3000:]
    [evaluation] = client.search_runs(
        [run.info.experiment_id], "tags.tta = 'flips' and tags.stage = 'evaluate'", max_results=1
    )
    assert 0 <= evaluation.data.metrics["val_mean_iou"] <= 1


def test_train_scores_the_test_split_again_over_the_tta_views_as_evaluate_does(source):
    """The fixture's run was trained with tta=dihedral: test_* stays the model's own score (evaluate without views
    reproduces it, above), test_tta_* is the eight views' average, and evaluate with the same views agrees."""
    project, client, run = source
    assert run.data.tags["tta"] == "dihedral" and run.data.tags["headline_metric"] == "test_mean_iou"
    assert run.data.metrics["test_tta_mean_iou"] != pytest.approx(run.data.metrics["test_mean_iou"], abs=1e-6)
    result = run_here("evaluate", project, f"source={run.info.run_id}", "tta=dihedral")
    assert result.returncode == 0, result.stderr[-3000:]
    [evaluation] = client.search_runs(
        [run.info.experiment_id], "tags.tta = 'dihedral' and tags.stage = 'evaluate'", max_results=1
    )
    for key in ("mean_iou", "dice", "pixel_accuracy"):
        assert evaluation.data.metrics[f"test_{key}"] == pytest.approx(run.data.metrics[f"test_tta_{key}"], abs=1e-4)


def test_bad_source_fails_in_one_line(source):
    project, *_ = source
    result = run_here("evaluate", project, "source=0123456789abcdef")
    assert result.returncode == 2
    [line] = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "source='0123456789abcdef': not found in the MLflow store" in line and "valid: a run id" in line


@pytest.mark.parametrize("mode", ["resize", "tile"])
def test_predict_writes_one_mask_per_image_at_its_own_size(source, mode):
    project, client, run = source
    images = project / f"photos_{mode}"
    images.mkdir()
    sizes = [(50, 70), (32, 32), (130, 90)]
    for i, (w, h) in enumerate(sizes):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (h, w, 3), dtype=np.uint8)).save(images / f"p{i}.png")
    out = project / f"pred_{mode}"
    result = run_here(
        "predict", project, f"source={run.info.run_id}", f"input_dir={images}", f"output_dir={out}", f"mode={mode}"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for i, size in enumerate(sizes):
        mask = Image.open(out / "masks" / f"p{i}.png")
        assert mask.size == size and np.asarray(mask).max() < 4
        assert Image.open(out / "overlays" / f"p{i}.png").size == size


def test_predict_keeps_apart_two_images_with_one_stem_and_counts_truly(source):
    project, client, run = source
    images = project / "same_stem"
    images.mkdir()
    for suffix, size in ((".png", (40, 30)), (".jpg", (20, 50))):
        Image.fromarray(np.full((*size[::-1], 3), 128, np.uint8)).save(images / f"photo{suffix}")
    (images / "notes.txt").write_text("not an image")
    out = project / "pred_same_stem"
    result = run_here("predict", project, f"source={run.info.run_id}", f"input_dir={images}", f"output_dir={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["photo_jpg.png", "photo_png.png"]
    assert Image.open(out / "masks" / "photo_jpg.png").size == (20, 50)
    assert "2 images -> 4 files" in result.stdout + result.stderr
    [prediction] = client.search_runs(
        [run.info.experiment_id], "tags.stage = 'predict' and tags.mode = 'resize'", max_results=1
    )
    assert prediction.data.metrics["files_written"] == 4
