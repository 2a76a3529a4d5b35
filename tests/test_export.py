"""Exports run by their own runtimes (TensorFlow's SavedModel loader, ONNX Runtime, the LiteRT interpreter)
predict what Keras predicts; a layer a format cannot take is named; the stage logs the figure."""

import keras
import numpy as np
import onnxruntime
import pytest

from helpers import run_stage
from pipeline.deploy import exporting
from pipeline.errors import ConfigError
from pipeline.models import build_model

# the default U-Net, SegNet (unpooling switches), the paper's U-Net (mirror padding, cropped skips), LeNet-5
MODELS = {
    "unet": ((64, 64, 3), 4, {"depth": 2, "base_filters": 4}),
    "segnet": ((64, 64, 3), 4, {"depth": 2, "base_filters": 4}),
    "unet_paper": ((64, 64, 3), 4, {"depth": 2, "base_filters": 4, "overlap_tile": True}),
    "lenet5": ((32, 32, 1), 10, {}),
}


@pytest.mark.parametrize("name", MODELS)
def test_every_format_predicts_what_keras_predicts(name, tmp_path):
    shape, classes, options = MODELS[name]
    keras.utils.set_random_seed(0)  # fixed weights: SegNet's switches can flip at a near-tie (README), not by chance
    model = build_model(name, shape, classes, **options)
    images = np.random.default_rng(0).uniform(0, 255, (5, *shape)).astype(np.float32)
    expected = np.asarray(model.predict(images, verbose=0))
    for fmt in exporting.FORMATS:
        path = exporting.export(model, fmt, tmp_path / fmt)
        exported = exporting.predict(fmt, path, images, batch_size=2)  # batches of another size than exported
        assert exported.shape == expected.shape, fmt
        assert np.abs(exported - expected).max() <= 1e-4, fmt
        assert exporting.parity(model, fmt, path, images) == pytest.approx(np.abs(exported - expected).max(), abs=1e-7)


def test_a_mixed_precision_model_is_exported_in_float32(tmp_path):
    keras.config.set_dtype_policy("mixed_bfloat16")  # conftest's fixture puts float32 back
    model = build_model("unet", (32, 32, 3), 3, depth=2, base_filters=4)
    keras.config.set_dtype_policy("float32")
    images = np.random.default_rng(1).uniform(0, 255, (4, 32, 32, 3)).astype(np.float32)
    path = exporting.export(model, "onnx", tmp_path)
    session = onnxruntime.InferenceSession(str(path))
    assert session.get_inputs()[0].type == session.get_outputs()[0].type == "tensor(float)"
    assert exporting.parity(model, "onnx", path, images) <= 1e-4  # against Keras in float32, same weights
    assert exporting.precision_gap(model, images) > 1e-4  # bfloat16 was visibly coarser: the figure is not void


@keras.saving.register_keras_serializable(package="tests")
class ArgmaxChannel(keras.layers.Layer):
    """Where each pixel's largest channel is: TensorFlow lowers a float argmax to Bitcast and BitwiseAnd."""

    def call(self, x):
        return keras.ops.cast(keras.ops.argmax(x, axis=-1), "float32")[..., None]


@pytest.mark.parametrize(("fmt", "why"), [("onnx", "ONNX has no Bitcast operator"), ("litert", "BitwiseAnd op")])
def test_a_layer_a_format_cannot_take_is_named_with_the_reason(fmt, why, tmp_path):
    inputs = keras.Input((8, 8, 3))
    hidden = ArgmaxChannel(name="where_max")(keras.layers.Conv2D(3, 3, padding="same")(inputs))
    model = keras.Model(inputs, keras.layers.Conv2D(2, 1, activation="softmax")(hidden), name="argmaxer")
    with pytest.raises(ConfigError) as refused:
        exporting.export(model, fmt, tmp_path)
    message = str(refused.value)
    assert "\n" not in message
    assert f"format={fmt} cannot take model 'argmaxer': layer 'where_max' (ArgmaxChannel)" in message
    assert why in message
    exporting.export(model, "saved_model", tmp_path / "sm")  # the format that takes it still does


def test_the_stage_logs_the_artefact_and_its_parity_under_the_source_run(tiny_unet):
    project, client, run = tiny_unet
    result = run_stage("export", project, f"source={run.info.run_id}", "format=onnx", "num_images=16")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "parity_max_abs_diff=" in result.stdout
    [export] = client.search_runs([run.info.experiment_id], "tags.stage = 'export'")
    assert export.data.tags["mlflow.parentRunId"] == run.info.run_id
    assert export.info.status == "FINISHED"
    assert export.data.params["format"] == "onnx"
    assert export.data.metrics["parity_max_abs_diff"] <= 1e-4
    assert [a.path for a in client.list_artifacts(export.info.run_id, "export/onnx")] == ["export/onnx/model.onnx"]
    written = project / "outputs" / "export" / run.info.run_id / "onnx" / "model.onnx"
    assert written.is_file()  # a folder of its own source: another model's export cannot overwrite it


def test_an_unknown_format_is_one_line_listing_the_valid_ones(tiny_unet):
    project, _, run = tiny_unet
    result = run_stage("export", project, f"source={run.info.run_id}", "format=tflite")
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last == "error: format='tflite' is unknown; valid: saved_model, onnx, litert"
    assert "Traceback" not in result.stderr
