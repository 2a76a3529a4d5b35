"""U-Nets on KerasHub image backbones (model=unet_backbone model.backbone=<preset name or local preset folder>).
Offline, the preset is one saved here from a randomly initialised ResNet (never a fake download): the skips come
from its feature pyramid, the preset's image converter scales the pixels, and bad presets are one line each."""

import importlib.util
import signal

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from helpers import TINY, find_runs, run_here, save_resnet_preset, start_stage, wait_for_backup
from pipeline.errors import ConfigError
from pipeline.models import build_model

pytestmark = pytest.mark.skipif(importlib.util.find_spec("keras_hub") is None, reason="keras-hub is not installed")


def pyramid_of(model):
    """The encoder: the backbone's pyramid (named after the backbone, res_net_backbone[_n]_pyramid)."""
    [pyramid] = [layer for layer in model.layers if layer.name.endswith("_pyramid")]
    return pyramid


@pytest.fixture(scope="module")
def preset(tmp_path_factory):
    return save_resnet_preset(tmp_path_factory.mktemp("hub") / "resnet_tiny")


def test_the_skips_come_from_the_backbone_s_pyramid(preset):
    model = build_model("unet_backbone", (32, 32, 3), 4, backbone=str(preset), base_filters=4)
    pyramid = pyramid_of(model)
    assert [tuple(o.shape[1:3]) for o in pyramid.outputs] == [(8, 8), (4, 4), (2, 2), (1, 1)]  # strides 4..32
    assert model.output.shape[1:] == (32, 32, 4)
    probabilities = model.predict(np.full((2, 32, 32, 3), 128.0, np.float32), verbose=0)
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, rtol=1e-5)
    # no converter in this preset: nothing rescales the pixels
    assert "preprocess" not in [layer.name for layer in pyramid.layers]


def test_the_preset_s_image_converter_scales_the_pixels(tmp_path):
    folder = save_resnet_preset(tmp_path / "with_converter", converter=True)
    model = build_model("unet_backbone", (32, 32, 3), 2, backbone=str(folder), base_filters=4)
    scaler = pyramid_of(model).get_layer("preprocess")
    pixels = np.random.default_rng(0).uniform(0, 255, (1, 32, 32, 3)).astype(np.float32)
    expected = (pixels / 255 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]  # by hand
    np.testing.assert_allclose(np.asarray(scaler(pixels)), expected, rtol=1e-5, atol=1e-5)


def test_a_bad_preset_is_one_line(preset, tmp_path):
    import keras_hub

    bert = tmp_path / "bert"
    keras_hub.models.BertBackbone(vocabulary_size=10, num_layers=1, num_heads=1, hidden_dim=2, intermediate_dim=4,
                                  max_sequence_length=4).save_to_preset(str(bert))  # fmt: skip
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("not a preset")
    cases = [
        (str(tmp_path / "missing"), r"is not a backbone preset \(no such folder\); valid: a keras.applications name"),
        ("resnet_81_imagenet", r"KerasHub has no preset of that name; closest: resnet_18_imagenet"),
        (str(tmp_path / "notes"), r"is not a backbone preset \(the folder holds readme.txt\)"),
        (str(bert), r"BertBackbone has no feature pyramid \(pyramid_outputs: none\) for a U-Net to take its skips"),
    ]
    for backbone, message in cases:
        with pytest.raises(ConfigError, match=message):
            build_model("unet_backbone", (32, 32, 3), 4, backbone=backbone)
    with pytest.raises(ConfigError, match=r"carries its own weights; valid: model.weights=null"):
        build_model("unet_backbone", (32, 32, 3), 4, backbone=str(preset), weights="imagenet")
    with pytest.raises(ConfigError, match=r"takes 3-channel images, not the data's 1; valid: data.channels=3"):
        build_model("unet_backbone", (32, 32, 1), 4, backbone=str(preset))
    with pytest.raises(ConfigError, match=r"stride 32, so the image size must be a multiple of 32, not 48x48; valid: "
                                          r"data.image_size=32"):  # fmt: skip
        build_model("unet_backbone", (48, 48, 3), 4, backbone=str(preset))


@pytest.mark.slow
def test_a_hub_preset_unet_trains_resumes_and_exports_with_parity(preset, tmp_path):
    """Killed after its first epoch, resumed in the same run to its second; then exported to ONNX, whose
    probabilities match the Keras model's (the export's own parity check) and its test score the run's."""
    tiny = [o for o in TINY if not o.startswith("model.")]  # the U-Net's depth and width are not this model's
    run_args = [*tiny, "model=unet_backbone", f"model.backbone={preset}", "model.base_filters=4",
                "trainer.epochs=2", "trainer.verbose=0"]  # fmt: skip
    process = start_stage(tmp_path, *run_args)
    wait_for_backup(tmp_path, process, epochs=1)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    resumed = run_here("train", tmp_path, *run_args, "trainer.resume=true")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    [run] = find_runs(client, "shapes", "tags.stage = 'train'")  # the killed run, resumed: one run
    assert run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")] == [0, 1]
    exported = run_here("export", tmp_path, f"source={run.info.run_id}", "format=onnx")
    assert exported.returncode == 0, exported.stderr[-3000:]
    [export] = find_runs(client, "shapes", "tags.stage = 'export'")
    assert export.info.status == "FINISHED" and export.data.metrics["parity_max_abs_diff"] < 1e-4
    assert abs(export.data.metrics["metric_delta"]) < 1e-3


def test_the_transfer_stage_fine_tunes_a_hub_preset_s_top_block_and_keeps_the_rest(preset, tmp_path):
    """cnn transfer on a local KerasHub preset: the decoder's warm-up, then the backbone's top block (stack3)
    too; every other block, and every batch norm, keeps the preset's weights."""
    import keras
    import keras_hub

    from pipeline.models.backbones import leaves

    out = tmp_path / "out"
    result = run_here("transfer", tmp_path, "data=shapes", "trainer=debug", "trainer.epochs=2", "trainer.verbose=0",
                       "tracking.num_examples=0", "tracking.log_model=false", f"transfer.source={preset}",
                       "transfer.strategy=fine_tune", "transfer.fine_tune_blocks=1", "transfer.warmup_epochs=1",
                       "transfer.base_filters=4", f"hydra.run.dir={out}")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    [run] = find_runs(client, "shapes", "tags.stage = 'transfer'")
    history = client.get_metric_history(run.info.run_id, "unfrozen_blocks")
    assert [(m.step, m.value) for m in history] == [(0, 0.0), (1, 1.0)]
    trained = pyramid_of(keras.models.load_model(out / "checkpoints" / "last.keras", compile=False))
    source = keras_hub.models.Backbone.from_preset(str(preset))
    weighted = [layer for layer in leaves(trained) if layer.weights]
    assert len(weighted) == len([layer for layer in source.layers if layer.weights])  # every layer compared

    def moved(layer):
        before = source.get_layer(layer.name).get_weights()
        return any(not np.array_equal(a, b) for a, b in zip(layer.get_weights(), before))

    changed = {layer.name for layer in weighted if moved(layer)}
    assert changed == {"stack3_block0_0_conv", "stack3_block0_1_conv", "stack3_block0_2_conv"}


def test_a_hub_preset_is_a_transfer_source_for_a_classifier_and_from_scratch(preset):
    """A classification set puts the head on the pyramid's deepest level (pooled); `scratch` gets the same
    graph newly initialised, while the other strategies get the preset's weights."""
    import keras
    import keras_hub

    from pipeline.models.backbones import leaves
    from pipeline.tasks import get_task
    from pipeline.training.transfer import build_transfer_model, load_backbone

    source = keras_hub.models.Backbone.from_preset(str(preset)).get_layer("stack3_block0_2_conv").get_weights()[0]
    kept, _ = load_backbone(str(preset), get_task("classification"), (32, 32, 3), "", False, None, None)
    fresh, _ = load_backbone(str(preset), get_task("classification"), (32, 32, 3), "", True, None, None)
    model = build_transfer_model(kept, get_task("classification"), 5, "fine_tune", 0.0, 4)
    assert tuple(model.output.shape) == (None, 5)
    assert kept.output.shape[1:] == (1, 1, 64)  # P5 of a 32-px image, the tiny ResNet's 64 filters

    def conv(backbone: keras.Model):
        [layer] = [layer for layer in leaves(backbone) if layer.name == "stack3_block0_2_conv"]
        return layer.get_weights()[0]

    np.testing.assert_array_equal(conv(kept), source)
    assert not np.allclose(conv(fresh), source)
