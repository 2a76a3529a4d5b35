"""The visualize stage end to end: train a tiny model, visualize its run id, read the pictures back from MLflow."""

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from helpers import run_here

FAST = [
    "num_images=2",
    "max_channels=4",
    "maximization.steps=3",
    "maximization.filters=2",
    "maximization.max_layers=2",
    "deconv.max_layers=2",
    "deconv.top=2",
]
KINDS = ("filters", "activations", "maximization", "deconv")
SINGLE = ("plots/saliency.png", "plots/gradcam.png", "plots/occlusion.png")


def pictures(client: MlflowClient, run_id: str, folder: str = "plots") -> set[str]:
    found = set()
    for item in client.list_artifacts(run_id, folder):
        found |= pictures(client, run_id, item.path) if item.is_dir else {item.path}
    return found


def visualize(client, project, source_run, *overrides: str):
    result = run_here("visualize", project, f"source={source_run.info.run_id}", *FAST, *overrides)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "visualize: 100%" in result.stderr and "activation maximization" in result.stderr  # progress per family
    [run] = client.search_runs([source_run.info.experiment_id], filter_string="tags.stage = 'visualize'", max_results=1)
    assert run.info.status == "FINISHED"
    # linked to its source: nested under it, tagged and parametrised with its id
    assert run.data.tags["mlflow.parentRunId"] == source_run.info.run_id
    assert run.data.params["source_run"] == source_run.info.run_id
    found = pictures(client, run.info.run_id)
    assert set(SINGLE) <= found
    for kind in KINDS:
        assert any(path.startswith(f"plots/{kind}/") for path in found), kind
    assert all(path.endswith(".png") for path in found)
    return run, found


@pytest.mark.slow
def test_digits_lenet5_every_picture_kind(lenet5_digits):
    project, client, source = lenet5_digits
    run, found = visualize(client, project, source)
    # LeNet-5: C1, S2, C3, S4, C5 feature maps; Grad-CAM on C3, the last conv with a spatial map (C5 is 1x1)
    assert {f"plots/activations/{k:02d}_{name}.png" for k, name in enumerate(["C1", "S2", "C3", "S4", "C5"])} <= found
    assert run.data.params["layer"] == "C3"
    assert {
        "plots/filters/first_layer.png",
        "plots/filters/kernel_norms.png",
        "plots/maximization/classes.png",
    } <= found
    assert run.data.metrics["maximization_gain_C1"] > 1.0

    bad = run_here("visualize", project, f"source={source.info.run_id}", "layer=nope")
    assert bad.returncode == 2 and "layer='nope' is not in model lenet5" in bad.stderr


@pytest.mark.slow
def test_shapes_unet_every_picture_kind(tiny_unet):
    project, client, source = tiny_unet
    run, found = visualize(client, project, source)
    assert run.data.params["layer"] == "decoder1_relu2"  # the last conv block's activation, before the classifier
    assert "plots/activations/00_encoder1_conv1.png" in found


def test_a_bad_setting_is_a_one_line_error(project):
    bad = run_here("visualize", project, "source=nowhere.keras", "occlusion.patch=0")
    assert bad.returncode == 2 and "occlusion.patch=0 is invalid: must be null or a positive integer" in bad.stderr


def test_a_picture_file_becomes_the_models_input(tmp_path):
    from PIL import Image

    from pipeline.interpret.explain import read_image

    picture = np.zeros((20, 40, 3), np.uint8)
    picture[:, 20:] = 255  # right half white
    Image.fromarray(picture).save(tmp_path / "half.png")
    grey = read_image(str(tmp_path / "half.png"), (32, 32, 1))
    assert grey.shape == (32, 32, 1) and grey[:, :12].max() == 0 and grey[:, 20:].min() == 255
    assert read_image(str(tmp_path / "half.png"), (16, 16, 3)).shape == (16, 16, 3)
