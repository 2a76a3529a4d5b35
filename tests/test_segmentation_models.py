"""The paper's U-Net, the modern U-Net's three decoders and SegNet: structure and shapes."""

import keras
import numpy as np
import pytest

from pipeline.errors import ConfigError
from pipeline.lecture.arithmetic import receptive_fields
from pipeline.models import build_model
from pipeline.models.layers import MaxUnpooling2D
from pipeline.models.unet import paper_output_size


def test_paper_unet_maps_572_to_388_as_in_the_paper():
    # Ronneberger et al. 2015, fig. 1: 572x572 input tile, 388x388 output segmentation map
    model = build_model("unet_paper", (572, 572, 1), 2, overlap_tile=False)
    assert tuple(model.output.shape) == (None, 388, 388, 2)
    assert paper_output_size(572, 4) == 388
    assert model.get_layer("encoder1_conv1").output.shape[1:] == (570, 570, 64)  # unpadded 3x3
    assert model.get_layer("bottleneck_conv2").output.shape[1:] == (28, 28, 1024)  # 64 doubling over 4 levels
    assert model.get_layer("decoder4_crop").output.shape[1:3] == (56, 56)  # 64x64 skip cropped to 56x56


def test_paper_unet_rejects_sizes_that_cannot_pool_naming_the_layer():
    with pytest.raises(ConfigError, match="layer encoder2_pool gets a 279-pixel map"):
        build_model("unet_paper", (570, 570, 1), 2, overlap_tile=False)


def test_overlap_tile_gives_an_output_the_size_of_the_input():
    model = build_model("unet_paper", (64, 64, 3), 4, depth=3, base_filters=4, overlap_tile=True)
    assert tuple(model.output.shape) == (None, 64, 64, 4)
    out = model.predict(np.random.default_rng(0).uniform(0, 255, (1, 64, 64, 3)).astype("float32"), verbose=0)
    np.testing.assert_allclose(out.sum(-1), 1.0, atol=1e-5)


@pytest.mark.parametrize(
    ("upsampling", "layer_type"),
    [("transpose", keras.layers.Conv2DTranspose), ("bilinear", keras.layers.UpSampling2D), ("unpool", MaxUnpooling2D)],
)
def test_each_decoder_builds_trains_and_uses_its_upsampling(upsampling, layer_type):
    model = build_model("unet", (32, 32, 3), 3, depth=2, base_filters=4, upsampling=upsampling)
    assert sum(isinstance(layer, layer_type) for layer in model.layers) == 2
    model.compile("adam", "sparse_categorical_crossentropy")
    x = np.random.default_rng(1).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    history = model.fit(x, np.random.default_rng(2).integers(0, 3, (4, 32, 32)), epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert receptive_fields(model)["classifier"][0].size > 10


def test_segnet_decodes_by_unpooling_without_skips():
    model = build_model("segnet", (32, 32, 3), 4, depth=3, base_filters=4)
    assert sum(isinstance(layer, MaxUnpooling2D) for layer in model.layers) == 3
    assert not any(isinstance(layer, keras.layers.Concatenate) for layer in model.layers)
    assert tuple(model.output.shape) == (None, 32, 32, 4)
    assert model.get_layer("decoder3_unpool").output.shape[1:] == (8, 8, 16)


def test_unknown_decoder_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="model.upsampling='nearest' is unknown; valid: transpose, bilinear, unpool"):
        build_model("unet", (32, 32, 3), 2, upsampling="nearest")
