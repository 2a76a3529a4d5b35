"""The U-Net builder: its structure, its shape checks, and a save/load round trip."""

import keras
import numpy as np
import pytest

from pipeline.errors import ConfigError
from pipeline.models import build_model
from pipeline.models.unet import unet


def test_output_is_a_per_pixel_distribution_at_input_resolution():
    model = unet((32, 48, 3), num_classes=4, depth=3, base_filters=4)
    out = model.predict(np.random.default_rng(0).uniform(0, 255, (2, 32, 48, 3)).astype("float32"), verbose=0)
    assert out.shape == (2, 32, 48, 4)
    np.testing.assert_allclose(out.sum(axis=-1), 1.0, atol=1e-5)


def test_encoder_decoder_structure_matches_the_paper():
    depth, base = 3, 8
    model = unet((32, 32, 3), num_classes=3, depth=depth, base_filters=base, batch_norm=False)
    pools = [layer for layer in model.layers if isinstance(layer, keras.layers.MaxPooling2D)]
    upconvs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2DTranspose)]
    skips = [layer for layer in model.layers if isinstance(layer, keras.layers.Concatenate)]
    assert len(pools) == len(upconvs) == len(skips) == depth
    # filters double per level down to the bottleneck and halve on the way up
    assert model.get_layer("bottleneck_conv2").filters == base * 2**depth
    assert [layer.filters for layer in upconvs] == [base * 4, base * 2, base]
    # each skip joins feature maps of the same resolution from encoder and decoder
    for level in range(1, depth + 1):
        enc = model.get_layer(f"encoder{level}_relu2").output.shape
        assert model.get_layer(f"decoder{level}_skip").output.shape[1:3] == enc[1:3]

    # parameters counted by hand: a 3x3 conv has 9*C_in*C_out + C_out, a 2x2 up-conv 4*C_in*C_out + C_out
    def conv(c_in, c_out, k=3):
        return k * k * c_in * c_out + c_out

    expected = 0
    channels = 3
    for level in range(depth):
        f = base * 2**level
        expected += conv(channels, f) + conv(f, f)
        channels = f
    f = base * 2**depth
    expected += conv(channels, f) + conv(f, f)
    channels = f
    for level in reversed(range(depth)):
        f = base * 2**level
        expected += conv(channels, f, k=2) + conv(2 * f, f) + conv(f, f)
        channels = f
    expected += conv(channels, 3, k=1)
    assert model.count_params() == expected


def test_size_that_cannot_be_pooled_names_the_layer():
    with pytest.raises(ConfigError, match="encoder3_pool.*divisible by 8"):
        unet((36, 36, 3), num_classes=2, depth=3)


def test_build_model_checks_option_names_and_types():
    with pytest.raises(ConfigError, match="model.widht is not an option of unet; valid: depth, base_filters"):
        build_model("unet", (32, 32, 3), 2, widht=3)
    with pytest.raises(ConfigError, match="model.batch_norm='yes' is invalid: must be true or false"):
        build_model("unet", (32, 32, 3), 2, batch_norm="yes")


def test_save_and_load_round_trip(tmp_path):
    model = unet((16, 16, 3), num_classes=2, depth=2, base_filters=4, dropout=0.2)
    x = np.random.default_rng(1).uniform(0, 255, (1, 16, 16, 3)).astype("float32")
    model.save(tmp_path / "unet.keras")
    loaded = keras.models.load_model(tmp_path / "unet.keras")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


def test_gabor_stem_feeds_the_encoder_and_trains_with_the_rest():
    model = build_model("unet", (16, 16, 3), 2, depth=1, base_filters=4, stem="gabor", stem_trainable=False)
    assert model.get_layer("stem").output.shape[-1] == 8  # 4 orientations x 2 wavelengths
    assert not model.get_layer("stem").trainable_weights
    model.compile("adam", "sparse_categorical_crossentropy")
    x = np.random.default_rng(0).uniform(0, 255, (4, 16, 16, 3)).astype("float32")
    model.fit(x, np.zeros((4, 16, 16), "int32"), verbose=0)
