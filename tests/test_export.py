"""Exports run by their own runtimes (TensorFlow's SavedModel loader, ONNX Runtime, the LiteRT interpreter)
predict what Keras predicts; a layer a format cannot take is named; the stage logs the figure."""

import json
import sys

import keras
import numpy as np
import onnxruntime
import pytest
from PIL import Image

from helpers import assert_same_masks_up_to_near_ties, onnx_client, run_here
from pipeline.deploy import contract, exporting
from pipeline.errors import ConfigError, DataError
from pipeline.models import build_model

# the default U-Net, SegNet (unpooling switches), the paper's U-Net (mirror padding, cropped skips), DeepLabV3+
# (dilated convolutions, the image's mean spread back, bilinear upsampling), LeNet-5
MODELS = {
    "unet": ((64, 64, 3), 4, {"depth": 2, "base_filters": 4}),
    "segnet": ((64, 64, 3), 4, {"depth": 2, "base_filters": 4}),
    "unet_paper": ((64, 64, 3), 4, {"depth": 2, "base_filters": 4, "overlap_tile": True}),
    "deeplabv3plus": ((64, 64, 3), 4, {"filters": 8, "projection_filters": 4}),
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


def test_every_format_carries_the_contract_and_names_its_input_images(tmp_path):
    model = build_model("lenet5", (32, 32, 1), 3)
    terms = contract.describe((32, 32, 1), ["a", "b", "c"], "classification", "probabilities", "per image",
                              {"mode": "range", "range": [0, 4095], "percentiles": [1, 99.8]}, "run123")  # fmt: skip
    paths = {fmt: exporting.export(model, fmt, tmp_path / fmt, terms) for fmt in exporting.FORMATS}
    session = onnxruntime.InferenceSession(str(paths["onnx"]))
    assert json.loads(session.get_modelmeta().custom_metadata_map["contract"]) == terms
    assert [i.name for i in session.get_inputs()] == ["images"]
    assert contract.read(paths["saved_model"] / "assets") == terms  # a SavedModel's own place for extra files
    assert contract.read(paths["litert"].parent) == terms
    import tensorflow as tf

    [name] = tf.saved_model.load(str(paths["saved_model"])).signatures["serving_default"].structured_input_signature[1]
    assert name == "images"
    from ai_edge_litert.interpreter import Interpreter

    assert Interpreter(model_path=str(paths["litert"])).get_signature_list()["serving_default"]["inputs"] == ["images"]


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


@pytest.fixture(scope="module")
def tiny_unet_exports(tiny_unet):
    """The tiny U-Net exported by the stage in every format (format=all): (project, client, run, the export
    runs by format, the table printed)."""
    project, client, run = tiny_unet
    result = run_here("export", project, f"source={run.info.run_id}", "format=all", "num_images=16",
                       "latency_runs=5")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    exports = client.search_runs([run.info.experiment_id], "tags.stage = 'export'")
    return project, client, run, {e.data.tags["format"]: e for e in exports}, result.stdout


@pytest.fixture(scope="module")
def tiny_unet_onnx(tiny_unet_exports):
    """(project, client, run, its ONNX export run, the .onnx file)."""
    project, client, run, exports, _ = tiny_unet_exports
    return (
        project,
        client,
        run,
        exports["onnx"],
        project / "outputs" / "export" / run.info.run_id / "onnx" / "model.onnx",
    )


def test_format_all_tables_every_format_beside_keras(tiny_unet_exports):
    """One row per format with its size, parity, test metric, delta, latency and verdict, as logged by each
    format's own run; the same table in the source run and beside the exports."""
    project, client, run, exports, printed = tiny_unet_exports
    assert set(exports) == {"saved_model", "onnx", "litert"}
    rows = {
        line.split(" | ")[0].strip("| "): line.split(" | ") for line in printed.splitlines() if line.startswith("| ")
    }
    assert set(rows) >= {"keras (float32)", "saved_model", "onnx", "litert"}
    for name, export in exports.items():
        metrics = export.data.metrics
        assert export.info.status == "FINISHED" and rows[name][-1].strip(" |") == "passed"
        assert rows[name][2] == f"{metrics['parity_max_abs_diff']:.2e}"
        assert rows[name][3] == f"{metrics['test_mean_iou_exported']:.4f}"
        assert float(rows[name][1]) == pytest.approx(metrics["size_bytes"] / 1e6, abs=0.01)
        assert 0 < metrics["latency_batch1_median_ms"] <= metrics["latency_batch1_p95_ms"]
    onnx_file = project / "outputs" / "export" / run.info.run_id / "onnx" / "model.onnx"
    assert exports["onnx"].data.metrics["size_bytes"] == onnx_file.stat().st_size
    table = (project / "outputs" / "export" / run.info.run_id / "formats.md").read_text()
    assert table in printed
    assert open(client.download_artifacts(run.info.run_id, "export/formats.md", str(project / "t"))).read() == table


def test_a_corrupted_weight_fails_the_metric_gate_in_a_failed_run_with_its_delta(tiny_unet_onnx, tmp_path):
    """One value changed in the exported file (the last convolution's bias of one class, +100: every pixel that
    class) is caught by the gate: the run is FAILED, the metric delta logged, one error line says both scores."""
    import onnx
    from onnx import numpy_helper

    project, client, run, _, written = tiny_unet_onnx
    graph = onnx.load(str(written))
    last_conv = next(node for node in reversed(graph.graph.node) if node.op_type == "Conv")
    [bias] = [init for init in graph.graph.initializer if init.name == last_conv.input[2]]
    values = numpy_helper.to_array(bias).copy()
    values[1] += 100.0
    bias.CopyFrom(numpy_helper.from_array(values, bias.name))
    corrupted = tmp_path / "model.onnx"
    onnx.save(graph, str(corrupted))
    result = run_here("export", project, f"source={run.info.run_id}", "format=onnx", f"artefact={corrupted}",
                       "num_images=4", "latency_runs=2")  # fmt: skip
    assert result.returncode != 0
    [line] = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    assert "exceeds max_metric_delta=0.001" in line and "Traceback" not in result.stderr
    [failed] = client.search_runs([run.info.experiment_id], "tags.stage = 'export' and attributes.status = 'FAILED'")
    assert failed.data.params["artefact"] == str(corrupted)
    assert failed.data.metrics["metric_delta"] < -0.001
    assert f"{failed.data.metrics['test_mean_iou_exported']:.4f} vs Keras" in line


def test_an_artefact_its_runtime_cannot_load_is_one_line(tmp_path):
    broken = tmp_path / "model.onnx"
    broken.write_bytes(b"\x08\x07 truncated")
    with pytest.raises(DataError, match=r"model.onnx: onnxruntime cannot load it as onnx: "):
        exporting.Exported("onnx", broken)
    with pytest.raises(DataError, match=r"no such litert artefact"):
        exporting.Exported("litert", tmp_path / "missing.tflite")


def test_the_stage_logs_the_artefact_and_its_parity_under_the_source_run(tiny_unet_onnx):
    project, client, run, export, written = tiny_unet_onnx
    assert export.data.tags["mlflow.parentRunId"] == run.info.run_id
    assert export.info.status == "FINISHED"
    assert export.data.params["format"] == "onnx"
    assert export.data.metrics["parity_max_abs_diff"] <= 1e-4
    logged = {a.path for a in client.list_artifacts(export.info.run_id, "export/onnx")}
    assert logged == {"export/onnx/model.onnx", "export/onnx/contract.json"}
    assert written.is_file()  # a folder of its own source: another model's export cannot overwrite it


def test_the_export_is_scored_on_the_whole_test_split_as_the_training_run_scored_it(tiny_unet_onnx):
    """The metric gate: the export's runtime and Keras (float32) each score the source's whole test split; Keras'
    figure is the training run's own held-out estimate (an independent reference: the train stage computed it)."""
    project, _, run, export, _ = tiny_unet_onnx
    metrics = export.data.metrics
    # the run scored its model in its own precision (mixed bfloat16 where the CPU has it); the export is float32
    close = 1e-6 if run.data.tags["precision"] == "float32" else 5e-3
    assert metrics["test_mean_iou_keras"] == pytest.approx(run.data.metrics["test_mean_iou"], abs=close)
    assert metrics["metric_images"] == len(list((project / "data" / "shapes_debug" / "test" / "images").iterdir()))
    assert abs(metrics["metric_delta"]) <= 0.001
    assert metrics["metric_delta"] == pytest.approx(metrics["test_mean_iou_exported"] - metrics["test_mean_iou_keras"])


def test_the_source_cards_lists_the_export_with_its_parity_and_metric_delta(tiny_unet_onnx):
    project, client, run, export, _ = tiny_unet_onnx
    result = run_here("card", project, f"source={run.info.run_id}", "json=true", "refresh=false")
    assert result.returncode == 0, result.stderr[-3000:]
    [listed] = [e for e in json.loads(result.stdout)["exports"] if e["run_id"] == export.info.run_id]
    assert listed["format"] == "onnx" and listed["run_id"] == export.info.run_id and listed["status"] == "FINISHED"
    assert listed["metric_delta"] == export.data.metrics["metric_delta"]
    assert listed["parity_max_abs_diff"] == export.data.metrics["parity_max_abs_diff"]
    logged = client.download_artifacts(run.info.run_id, "model_card.md", str(project / "card"))
    assert f"| onnx | `{export.info.run_id}` | FINISHED |" in open(logged).read()  # refreshed by the export


def test_the_metric_gate_fails_past_its_bound_naming_both_scores():
    assert exporting.metric_gate("onnx", "test_mean_iou", 0.90, 0.9005, 0.001) is None
    assert exporting.metric_gate("onnx", "test_mean_iou", 0.90, 0.895, 0.001) == (
        "format=onnx: test_mean_iou 0.8950 vs Keras 0.9000 (delta -0.0050) exceeds max_metric_delta=0.001"
    )
    assert exporting.metric_gate("onnx", "test_accuracy", 0.9, 0.1, None) is None  # null: not checked


def test_the_onnx_file_describes_itself_in_its_own_metadata(tiny_unet_onnx):
    _, _, run, _, written = tiny_unet_onnx
    session = onnxruntime.InferenceSession(str(written))
    meta = session.get_modelmeta().custom_metadata_map
    contract = json.loads(meta["contract"])
    assert [i.name for i in session.get_inputs()] == ["images"] and session.get_inputs()[0].shape[1:] == [32, 32, 3]
    assert [o.name for o in session.get_outputs()] == ["probabilities"]  # not tf2onnx's Identity:0
    assert contract["class_names"] == ["background", "circle", "square", "triangle"]
    assert contract["input"]["shape"] == [None, 32, 32, 3] and contract["input"]["intensity"] is None  # 8-bit
    assert contract["input"]["value_range"] == [0, 255] and contract["input"]["layout"] == "NHWC"
    assert contract["source_run"] == run.info.run_id
    assert contract["test_metric"] == {
        "name": "test_mean_iou",
        "value": pytest.approx(run.data.metrics["test_mean_iou"]),
    }
    assert contract["data"]["name"] == "shapes" and len(contract["data"]["train_digest"]) >= 8
    assert meta["input_size"] == "32x32" and meta["class_names"] == json.dumps(contract["class_names"])


def test_a_plain_onnx_client_reading_only_the_metadata_predicts_what_cnn_predict_writes(tiny_unet_onnx, tmp_path):
    project, _, run, _, written = tiny_unet_onnx
    images = sorted((project / "data" / "shapes_debug" / "test" / "images").iterdir())[:6]
    assert images, "the tiny run's test images"
    raw = tmp_path / "raw"
    raw.mkdir()
    for path in images:
        (raw / path.name).write_bytes(path.read_bytes())
    result = run_here("predict", project, f"source={run.info.run_id}", f"input_dir={raw}", f"output_dir={tmp_path}/out")
    assert result.returncode == 0, result.stderr[-3000:]
    output, classes, names = onnx_client(written, sorted(raw.iterdir()), tmp_path / "client.npz")
    assert names == ["background", "circle", "square", "triangle"]
    # cnn predict runs the model in its trained precision (mixed bfloat16 where the CPU has it), the export float32
    near = 1e-3 if run.data.tags["precision"] == "float32" else 1e-2
    files = sorted(raw.iterdir())
    masks = [np.asarray(Image.open(tmp_path / "out" / "masks" / f"{path.stem}.png")) for path in files]
    assert_same_masks_up_to_near_ties(masks, classes, output, near, [path.name for path in files])


def test_an_unknown_format_is_one_line_listing_the_valid_ones(tiny_unet):
    project, _, run = tiny_unet
    result = run_here("export", project, f"source={run.info.run_id}", "format=tflite")
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last == "error: format='tflite' is unknown; valid: saved_model, onnx, litert, all"
    assert "Traceback" not in result.stderr


def test_a_format_whose_runtime_is_missing_is_one_line_naming_the_package(monkeypatch):
    """None in sys.modules is Python's own way of saying a module cannot be imported."""
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ConfigError, match=r"format=onnx needs onnxruntime, not installed: pip install"):
        exporting.check_requirements("onnx")
    exporting.check_requirements("saved_model")  # the others are unaffected


def test_a_tolerance_out_of_range_is_one_line_before_anything_loads(tmp_path):
    override, valid = "max_metric_delta=-1", "null or a number >= 0"
    result = run_here("export", tmp_path, "source=anything", override)
    assert result.returncode == 2
    [line] = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    assert line.startswith(f"error: {override} is invalid: must be {valid}") and "Traceback" not in result.stderr
