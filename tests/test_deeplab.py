"""DeepLabV3+ (model=deeplabv3plus) beside the lecture's U-Net: its atrous spatial pyramid pooling sits on the
stride-16 map and its decoder joins the stride-4 one, from a keras.applications network or a KerasHub preset (saved
here from a randomly initialised ResNet, never a fake download); it is one model at inference however it is called;
frozen, its encoder keeps every weight; bad options are one line each."""

import importlib.util
import re

import keras
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from helpers import find_runs, run_here, save_resnet_preset
from pipeline.errors import ConfigError
from pipeline.models import build_model

needs_hub = pytest.mark.skipif(importlib.util.find_spec("keras_hub") is None, reason="keras-hub is not installed")
SMALL = {"filters": 8, "projection_filters": 4}


@pytest.fixture(scope="module")
def preset(tmp_path_factory):
    pytest.importorskip("keras_hub")
    return save_resnet_preset(tmp_path_factory.mktemp("hub") / "resnet_tiny")


def encoder_of(model):
    [encoder] = [layer for layer in model.layers if layer.name.endswith("_encoder")]
    return encoder


def images(n=4, size=64):
    return np.random.default_rng(0).uniform(0, 255, (n, size, size, 3)).astype(np.float32)


def test_the_pyramid_pooling_reads_the_stride_16_map_and_the_decoder_joins_the_stride_4_map():
    model = build_model("deeplabv3plus", (64, 64, 3), 4, backbone="MobileNetV2", dilation_rates=[1, 2, 3], **SMALL)
    shallow, deep = encoder_of(model).outputs
    assert (tuple(shallow.shape[1:3]), tuple(deep.shape[1:3])) == ((16, 16), (4, 4))  # 64 / 4, 64 / 16
    rates = {layer.name: layer.dilation_rate for layer in model.layers if isinstance(layer, keras.layers.Conv2D)
             and layer.name.startswith("aspp_rate")}  # fmt: skip
    assert rates == {"aspp_rate1": (1, 1), "aspp_rate2": (2, 2), "aspp_rate3": (3, 3)}
    # five branches side by side: 1x1, three rates, the image's mean
    assert model.get_layer("aspp_join").output.shape[1:] == (4, 4, 5 * 8)
    assert model.get_layer("decoder_join").output.shape[1:] == (16, 16, 8 + 4)
    probabilities = model.predict(images(2), verbose=0)
    assert probabilities.shape == (2, 64, 64, 4)
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, rtol=1e-5)


def test_the_image_pooling_branch_is_the_map_s_mean_spread_over_it():
    """The ASPP's fifth branch (Chen et al. 2017, 3.3): the same value at every position, that of the map's mean
    through its 1x1 conv, batch norm and ReLU, computed here by hand from the layer's weights."""
    model = build_model("deeplabv3plus", (64, 64, 3), 4, backbone="MobileNetV2", **SMALL)
    deep = keras.Model(model.inputs, model.get_layer("aspp_1x1").input)  # the stride-16 map, as the ASPP reads it
    spread = keras.Model(model.inputs, model.get_layer("aspp_image_spread").output)
    x = images(2)
    mean = np.asarray(deep.predict(x, verbose=0)).mean(axis=(1, 2))  # (2, channels)
    [kernel] = model.get_layer("aspp_image").get_weights()
    gamma, beta, moving_mean, moving_variance = model.get_layer("aspp_image_bn").get_weights()
    bn = model.get_layer("aspp_image_bn")
    expected = np.maximum((mean @ kernel[0, 0] - moving_mean) / np.sqrt(moving_variance + bn.epsilon) * gamma + beta, 0)
    got = np.asarray(spread.predict(x, verbose=0))
    np.testing.assert_allclose(got, np.broadcast_to(expected[:, None, None, :], got.shape), rtol=1e-4, atol=1e-5)


@needs_hub
def test_a_plain_call_is_inference_and_leaves_the_batch_norm_statistics_alone(preset):
    """KerasHub's own DeepLabV3Backbone fails this (keras-hub 0.32, Keras 3.15): its ASPP's nested Resizing layer
    leaks training=True into the call context, so a call without `training` normalises by the batch and moves
    the statistics (module docstring)."""
    for backbone in ("MobileNetV2", str(preset)):
        model = build_model("deeplabv3plus", (64, 64, 3), 4, backbone=backbone, **SMALL)
        statistics = [np.array(v) for v in model.non_trainable_weights]
        x = images()
        called, predicted = np.asarray(model(x)), model.predict(x, verbose=0)
        np.testing.assert_allclose(called, predicted, atol=1e-6, err_msg=backbone)
        np.testing.assert_allclose(np.asarray(model(x[:1])), predicted[:1], atol=1e-6, err_msg=backbone)  # per image
        for before, after in zip(statistics, model.non_trainable_weights):
            np.testing.assert_array_equal(before, np.array(after), err_msg=f"{backbone}: {after.path}")


@needs_hub
def test_the_encoder_stops_at_the_pooled_level_so_every_weight_trains(preset):
    """The tiny ResNet's pyramid runs to P5 (stack3); pooling P4 leaves stack3 out of the model, and one
    optimizer step moves every trainable weight (a deeper stage kept in would get no gradient)."""
    model = build_model("deeplabv3plus", (64, 64, 3), 4, backbone=str(preset), **SMALL)
    assert not [w.path for w in model.weights if "stack3" in w.path]
    assert [w.path for w in model.weights if "stack2" in w.path]  # P4 itself is in
    before = [np.array(w) for w in model.trainable_weights]
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    labels = np.random.default_rng(1).integers(0, 4, (4, 64, 64))
    model.fit(images(), labels, epochs=1, batch_size=4, verbose=0)
    still = [w.path for w, b in zip(model.trainable_weights, before) if np.array_equal(b, np.array(w))]
    assert not still, still


def test_a_frozen_encoder_keeps_every_weight_and_statistic_and_the_head_trains():
    model = build_model("deeplabv3plus", (64, 64, 3), 4, backbone="MobileNetV2", freeze_encoder=True, **SMALL)
    encoder = encoder_of(model)
    kept = [np.array(w) for w in encoder.weights]
    head = np.array(model.get_layer("classifier").kernel)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    labels = np.random.default_rng(1).integers(0, 4, (4, 64, 64))
    model.fit(images(), labels, epochs=2, batch_size=2, verbose=0)
    assert all(np.array_equal(k, np.array(w)) for k, w in zip(kept, encoder.weights))  # BN moving stats included
    assert not np.array_equal(head, np.array(model.get_layer("classifier").kernel))


@pytest.mark.parametrize("name", ["deeplabv3plus", "unet_backbone"])
def test_an_encoder_from_random_weights_moves_its_batch_norm_statistics_at_0_99(name):
    """MobileNetV2's own momentum, 0.999, left the default deeplabv3plus job predicting background everywhere on
    validation (0.1914 at every epoch; docs/segmentation.md): its statistics had not forgotten their start."""
    from pipeline.models.backbones import leaves

    def momenta(model):
        return {layer.momentum for layer in leaves(encoder_of(model) if name == "deeplabv3plus" else model)
                if isinstance(layer, keras.layers.BatchNormalization) and "decoder" not in layer.name}  # fmt: skip

    options = SMALL if name == "deeplabv3plus" else {"base_filters": 4}
    assert momenta(build_model(name, (64, 64, 3), 4, backbone="MobileNetV2", **options)) == {0.99}
    assert momenta(build_model(name, (64, 64, 3), 4, backbone="MobileNetV2", bn_momentum=None, **options)) == {0.999}
    with pytest.raises(ConfigError, match=r"^model.bn_momentum=1.0 is invalid: must be in \[0, 1\), or null"):
        build_model(name, (64, 64, 3), 4, backbone="MobileNetV2", bn_momentum=1.0, **options)


def test_bad_options_are_one_line_each(tmp_path):
    cases = [
        ({"aspp_level": 6}, "model.aspp_level=6: model.backbone='MobileNetV2' gives maps at levels 1, 2, 3, 4, 5 "
                            "(stride 2**level) for 64x64 images; valid: one of them"),
        ({"low_level": 4}, "model.low_level=4 must be shallower than model.aspp_level=4; valid: low_level < "
                           "aspp_level"),
        ({"dilation_rates": [0, 2]}, "model.dilation_rates=[0, 2] is invalid: one or more different rates >= 1"),
        ({"dilation_rates": [2, 2]}, "model.dilation_rates=[2, 2] is invalid: one or more different rates >= 1"),
        ({"dropout": 1.0}, "model.dropout=1.0 is invalid: must be in [0, 1)"),
    ]  # fmt: skip
    for options, message in cases:
        with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
            build_model("deeplabv3plus", (64, 64, 3), 4, backbone="MobileNetV2", **options)
    with pytest.raises(ConfigError, match=r"is not a backbone preset \(no such folder\); valid: a keras.applications"):
        build_model("deeplabv3plus", (64, 64, 3), 4, backbone=str(tmp_path / "missing"))


@needs_hub
def test_a_hub_preset_s_weights_are_its_own(preset):
    with pytest.raises(ConfigError, match=r"carries its own weights; valid: model.weights=null"):
        build_model("deeplabv3plus", (64, 64, 3), 4, backbone=str(preset), weights="imagenet")


@needs_hub
def test_a_hub_preset_needs_the_image_size_to_divide_only_by_the_strides_the_model_reads(preset):
    """The preset's pyramid reaches P5 (stride 32), but DeepLabV3+ cut after P4 reads stride 16 at most: 48 px
    (3x3 maps at P4) builds, 40 px is one line naming P4, and with the pools at P3 (stride 8) 40 px builds."""
    model = build_model("deeplabv3plus", (48, 48, 3), 4, backbone=str(preset), **SMALL)
    assert model.get_layer("aspp_join").output.shape[1:3] == (3, 3)
    assert model.predict(np.zeros((1, 48, 48, 3), "float32"), verbose=0).shape == (1, 48, 48, 4)
    message = (f"model.backbone={str(preset)!r}: the model reads its level P4 at stride 16, so the image size must "
               "be a multiple of 16, not 40x40; valid: data.image_size=32")  # fmt: skip
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        build_model("deeplabv3plus", (40, 40, 3), 4, backbone=str(preset), **SMALL)
    shallow = build_model("deeplabv3plus", (40, 40, 3), 4, backbone=str(preset), **{**SMALL, "aspp_level": 3})
    assert shallow.get_layer("aspp_join").output.shape[1:3] == (5, 5)


@pytest.mark.quality  # make quality: CI's 30 minutes are spent (the export parity of every format is in test_export)
@needs_hub
def test_deeplabv3plus_on_a_hub_preset_trains_and_exports_with_parity(preset, tmp_path):
    """The train stage on shapes, then its ONNX export, whose probabilities match the Keras model's (the export's
    own parity check) and its test score the run's."""
    trained = run_here("train", tmp_path, "trainer=debug", "trainer.epochs=2", "trainer.verbose=0",
                       "tracking.num_examples=0", "model=deeplabv3plus", f"model.backbone={preset}",
                       "model.filters=8", "model.projection_filters=4")  # fmt: skip
    assert trained.returncode == 0, trained.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    [run] = find_runs(client, "shapes", "tags.stage = 'train'")
    assert run.info.status == "FINISHED" and run.data.params["model.name"] == "deeplabv3plus"
    exported = run_here("export", tmp_path, f"source={run.info.run_id}", "format=onnx")
    assert exported.returncode == 0, exported.stderr[-3000:]
    [export] = find_runs(client, "shapes", "tags.stage = 'export'")
    assert export.info.status == "FINISHED" and export.data.metrics["parity_max_abs_diff"] < 1e-4
    assert abs(export.data.metrics["metric_delta"]) < 1e-3
