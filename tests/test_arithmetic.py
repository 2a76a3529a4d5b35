"""Conv arithmetic, parameter counts and receptive fields against Keras, hand derivations and published values."""

import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf

from pipeline.errors import ConfigError
from pipeline.lecture.arithmetic import (
    conv_output_size,
    conv_params,
    conv_vs_dense,
    dense_params,
    receptive_fields,
    stacked_small_filters,
    transposed_output_size,
)
from pipeline.lecture.kernels import conv2d


def test_output_size_formula_matches_keras_for_conv_and_pooling():
    for size, kernel, stride, padding in itertools.product((7, 8, 15, 32), (1, 2, 3, 5), (1, 2, 3), ("valid", "same")):
        if padding == "valid" and (size - kernel) % stride:
            continue  # Keras floors here; the lecture's formula insists on whole windows
        for layer in (
            keras.layers.Conv2D(1, kernel, strides=stride, padding=padding),
            keras.layers.MaxPooling2D(kernel, stride, padding),
        ):
            expected = layer.compute_output_shape((None, size, size, 1))[1]
            assert conv_output_size(size, kernel, stride, padding) == expected, (size, kernel, stride, padding)


def test_output_size_examples_from_the_slides_and_cs231n():
    assert conv_output_size(32, 5) == 28  # 32x32x3 image, 5x5x3 filter -> 28x28
    assert conv_output_size(32, 3, 1, 1) == 32  # F = 3, S = 1, P = 1 preserves size
    assert conv_output_size(7, 3, 2) == 3


def test_impossible_sizes_name_the_layer():
    with pytest.raises(
        ConfigError, match=r"layer conv3: output size \(7 - 3 \+ 2\*0\) / 3 \+ 1 = 2.33333 is not an integer"
    ):
        conv_output_size(7, 3, 3, layer="conv3")
    with pytest.raises(ConfigError, match="layer c1: a 5x5 window does not fit a 3-pixel input"):
        conv_output_size(3, 5, layer="c1")


@pytest.mark.parametrize(("size", "kernel", "stride"), [(4, 2, 2), (5, 3, 2), (7, 3, 1), (3, 4, 3)])
def test_transposed_output_size_matches_keras(size, kernel, stride):
    layer = keras.layers.Conv2DTranspose(1, kernel, strides=stride, padding="valid")
    assert transposed_output_size(size, kernel, stride) == layer.compute_output_shape((None, size, size, 1))[1]


def test_parameter_counts_match_keras():
    conv = keras.layers.Conv2D(16, 5)
    conv.build((None, 32, 32, 3))
    assert conv_params(5, 3, 16) == conv.count_params() == 1216
    dense = keras.layers.Dense(10)
    dense.build((None, 84))
    assert dense_params(84, 10) == dense.count_params()
    counts = conv_vs_dense(32, 32, 3, 5, 6)
    assert counts["conv"] == 456 and counts["dense"] == 32 * 32 * 6 * (32 * 32 * 3 + 1)


@pytest.mark.parametrize("channels", [8, 64])
def test_three_3x3_convs_cost_27c2_against_49c2_for_one_7x7(channels):
    counts = stacked_small_filters(channels)
    assert counts == {"large": 49 * channels**2, "stacked": 27 * channels**2, "layers": 3}
    inputs = keras.Input((16, 16, channels))
    x = inputs
    for _ in range(3):
        x = keras.layers.Conv2D(channels, 3, padding="same", use_bias=False)(x)
    one = keras.Model(inputs, keras.layers.Conv2D(channels, 7, padding="same", use_bias=False)(inputs))
    assert keras.Model(inputs, x).count_params() == counts["stacked"] and one.count_params() == counts["large"]


def chain(*layers, size=64):
    inputs = keras.Input((size, size, 1))
    x = inputs
    for layer in layers:
        x = layer(x)
    return keras.Model(inputs, x)


def test_two_3x3_convs_see_5x5_and_three_see_7x7():
    # the slide "two 3x3 filters together perform like one 5x5 filter"
    model = chain(*(keras.layers.Conv2D(1, 3, name=f"c{i}") for i in range(3)))
    fields = receptive_fields(model)
    assert [fields[f"c{i}"][0].size for i in range(3)] == [3, 5, 7]


def test_conv_pool_chain_matches_hand_derivation():
    # r_k = r_{k-1} + (f_k - 1) * prod(s_1..s_{k-1}): 3, 4, 8, 10, 18, 26, 30 (worked by hand, layer by layer)
    layers = [
        keras.layers.Conv2D(1, 3),
        keras.layers.MaxPooling2D(2),
        keras.layers.Conv2D(1, 3),
        keras.layers.MaxPooling2D(2),
        keras.layers.Conv2D(1, 3),
        keras.layers.Conv2D(1, 3),
        keras.layers.MaxPooling2D(2),
    ]
    model = chain(*layers, size=96)
    fields = receptive_fields(model)
    assert [fields[layer.name][0].size for layer in layers] == [3, 4, 8, 10, 18, 26, 30]
    assert fields[layers[-1].name][0].jump == 8


def test_dilation_widens_the_field():
    model = chain(keras.layers.Conv2D(1, 3, dilation_rate=2, name="d"))
    assert receptive_fields(model)["d"][0].size == 5


def measured_field(model: keras.Model) -> int:
    """The receptive field measured, not computed: the support of d(centre output)/d(input) for a linear model."""
    size = model.inputs[0].shape[1]
    x = tf.Variable(np.random.default_rng(0).uniform(1, 2, (1, size, size, 1)).astype("float32"))
    with tf.GradientTape() as tape:
        out = model(x)
        centre = out[0, out.shape[1] // 2, out.shape[2] // 2, 0]
    grad = tape.gradient(centre, x).numpy()[0, :, :, 0]
    rows = np.nonzero(np.abs(grad).sum(axis=1) > 0)[0]
    return int(rows.max() - rows.min() + 1)


def test_branches_and_merges_agree_with_the_measured_gradient_support():
    keras.utils.set_random_seed(0)
    init = keras.initializers.RandomUniform(0.1, 1.0)  # positive weights: no cancellation in the gradient
    inputs = keras.Input((48, 48, 1))
    stem = keras.layers.Conv2D(4, 3, padding="same", kernel_initializer=init)(inputs)
    wide = keras.layers.Conv2D(4, 5, padding="same", kernel_initializer=init)(stem)
    narrow = keras.layers.Conv2D(4, 1, padding="same", kernel_initializer=init)(stem)
    merged = keras.layers.Add()([wide, narrow])
    pooled = keras.layers.AveragePooling2D(2)(merged)
    cat = keras.layers.Concatenate()(
        [pooled, keras.layers.Conv2D(4, 3, padding="same", kernel_initializer=init)(pooled)]
    )
    out = keras.layers.Conv2D(1, 3, padding="same", kernel_initializer=init, name="out")(cat)
    model = keras.Model(inputs, out)
    computed = receptive_fields(model)["out"][0].size
    assert computed == measured_field(model) == 16  # 3 -> 7 (5x5 branch) -> 8 (pool) -> 12 (3x3) -> 16 (3x3)


def test_vgg16_receptive_fields_match_published_values():
    # Araujo, Norris & Sim, "Computing Receptive Fields of Convolutional Neural Networks", Distill 2019,
    # table of modern networks: vgg_16 r = 212 with effective stride 32 at pool5; conv5_3 is 196 (212 - (2-1)*16).
    model = keras.applications.VGG16(weights=None, include_top=False, input_shape=(224, 224, 3))
    fields = receptive_fields(model)
    assert fields["block5_conv3"][0].size == 196
    assert (fields["block5_pool"][0].size, fields["block5_pool"][0].jump) == (212, 32)


def test_resnet50_receptive_field_matches_published_value():
    # Araujo et al., Distill 2019, same table: resnet_v1_50 r = 483, effective stride 32 (final block)
    model = keras.applications.ResNet50(weights=None, include_top=False, input_shape=(224, 224, 3))
    field = receptive_fields(model)["conv5_block3_out"]
    assert (field[0].size, field[0].jump) == (483, 32) and field[1].size == 483


def test_strided_conv_equals_unit_stride_conv_then_subsampling():
    # the slide "Down-sampling vs strided convolution", checked with Keras and with the reference conv
    x = np.random.default_rng(1).normal(size=(1, 15, 15, 2)).astype("float32")
    strided = keras.layers.Conv2D(3, 3, strides=2)
    strided.build(x.shape)
    dense = keras.layers.Conv2D(3, 3, strides=1)
    dense.build(x.shape)
    dense.set_weights(strided.get_weights())
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(strided(x)), keras.ops.convert_to_numpy(dense(x))[:, ::2, ::2], atol=1e-5
    )
    w = strided.get_weights()[0]
    np.testing.assert_allclose(conv2d(x[0], w, stride=2), conv2d(x[0], w)[::2, ::2], atol=1e-10)


def test_max_pooling_is_measurably_invariant_to_small_shifts():
    # Goodfellow et al. 2016, fig. 9.8: shift the detector outputs right by one pixel. Every raw value
    # changes; after 3x3 max pooling about half stay the same (a window keeps its max when the max lies
    # in the 6 of its 12 pixels that both windows share: probability 1/2 for i.i.d. values).
    rng = np.random.default_rng(2)
    detector = rng.uniform(0, 1, (1, 64, 66, 1)).astype("float32")
    shifted = detector[:, :, :-2], detector[:, :, 1:-1]  # the same signal, one pixel apart
    pool = keras.layers.MaxPooling2D(3, strides=1, padding="valid")
    raw_changed = np.mean(shifted[0] != shifted[1])
    pooled = [keras.ops.convert_to_numpy(pool(s)) for s in shifted]
    pooled_changed = np.mean(pooled[0] != pooled[1])
    assert raw_changed > 0.99
    assert 0.4 < pooled_changed < 0.6, pooled_changed
