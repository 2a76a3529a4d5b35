"""The lecture's filters and reference convolution, each checked against an independent library."""

import math

import cv2
import keras
import numpy as np
import pytest
from scipy import ndimage, signal

from pipeline.lecture.kernels import SOBEL_X, SOBEL_Y, conv2d, convolve2d, correlate2d, gabor, gabor_bank, template
from pipeline.models.layers import FixedKernelConv2D

rng = np.random.default_rng(0)


@pytest.mark.parametrize("padding", [0, 1, 2])
def test_single_channel_correlation_and_convolution_equal_scipy(padding):
    image, kernel = rng.normal(size=(11, 9)), rng.normal(size=(3, 4))
    padded = np.pad(image, padding)
    np.testing.assert_allclose(
        correlate2d(image, kernel, padding), signal.correlate2d(padded, kernel, "valid"), atol=1e-10
    )
    np.testing.assert_allclose(
        convolve2d(image, kernel, padding), signal.convolve2d(padded, kernel, "valid"), atol=1e-10
    )
    # convolution is correlation with the kernel rotated by 180 degrees
    np.testing.assert_allclose(convolve2d(image, kernel), correlate2d(image, kernel[::-1, ::-1]), atol=1e-12)


@pytest.mark.parametrize(
    ("stride", "padding", "keras_padding", "size"), [(1, 0, "valid", 12), (2, 0, "valid", 13), (1, 1, "same", 12)]
)
def test_multichannel_bank_equals_keras_conv2d(stride, padding, keras_padding, size):
    x = rng.normal(size=(size, size, 3)).astype(np.float32)
    w = rng.normal(size=(3, 3, 3, 5)).astype(np.float32)
    b = rng.normal(size=5).astype(np.float32)
    layer = keras.layers.Conv2D(5, 3, strides=stride, padding=keras_padding)
    layer.build((None, size, size, 3))
    layer.set_weights([w, b])
    expected = keras.ops.convert_to_numpy(layer(x[None]))[0]
    np.testing.assert_allclose(conv2d(x, w, b, stride=stride, padding=padding), expected, atol=1e-5)


def test_output_has_the_slide_shape_28x28x6():
    out = conv2d(rng.normal(size=(32, 32, 3)), rng.normal(size=(5, 5, 3, 6)))
    assert out.shape == (28, 28, 6)


def test_sobel_equals_scipy_ndimage_sobel():
    image = rng.normal(size=(16, 20))
    np.testing.assert_allclose(correlate2d(image, SOBEL_X), ndimage.sobel(image, axis=1)[1:-1, 1:-1], atol=1e-10)
    np.testing.assert_allclose(correlate2d(image, SOBEL_Y), ndimage.sobel(image, axis=0)[1:-1, 1:-1], atol=1e-10)


def test_sobel_x_finds_vertical_edges_only():
    image = np.zeros((10, 10))
    image[:, 5:] = 1.0  # one vertical edge
    assert np.abs(correlate2d(image, SOBEL_X)).max() == 4.0
    assert np.abs(correlate2d(image, SOBEL_Y)).max() == 0.0


@pytest.mark.parametrize(
    ("theta", "wavelength", "phase", "gamma"), [(0.0, 4.0, 0.0, 0.5), (math.pi / 3, 6.0, 0.7, 1.0)]
)
def test_gabor_real_part_equals_opencv(theta, wavelength, phase, gamma):
    size, sigma = 15, 3.0
    ours = gabor(size, wavelength, theta, phase, sigma, gamma)
    reference = cv2.getGaborKernel((size, size), sigma, theta, wavelength, gamma, phase, ktype=cv2.CV_64F)
    # OpenCV stores g(x, y) at [ymax - y, xmax - x]: the same kernel rotated by 180 degrees
    np.testing.assert_allclose(ours.real, reference[::-1, ::-1], atol=1e-12)
    # imaginary part = real part a quarter period earlier: sin(a) = cos(a - pi/2)
    np.testing.assert_allclose(
        ours.imag, gabor(size, wavelength, theta, phase - math.pi / 2, sigma, gamma).real, atol=1e-12
    )


def test_gabor_bank_responds_most_to_its_own_orientation():
    bank = gabor_bank(size=15, orientations=4, wavelengths=(6.0,))
    y, x = np.mgrid[0:32, 0:32]
    for k in range(4):
        theta = math.pi * k / 4
        grating = np.cos(2 * math.pi * (x * math.cos(theta) + y * math.sin(theta)) / 6.0)
        energy = [np.abs(correlate2d(grating, bank[:, :, 0, j])).mean() for j in range(4)]
        assert int(np.argmax(energy)) == k


def test_template_correlation_peaks_where_the_pattern_is():
    pattern = rng.normal(size=(5, 5))
    image = rng.normal(scale=0.3, size=(40, 40))
    image[23:28, 11:16] += pattern
    response = correlate2d(image, template(pattern))
    assert np.unravel_index(np.argmax(response), response.shape) == (23, 11)


def test_fixed_sobel_stem_equals_scipy_on_intensity_and_stays_fixed(tmp_path):
    grey = rng.uniform(0, 1, (12, 12))
    rgb = np.repeat(grey[None, :, :, None], 3, axis=-1).astype(np.float32)
    layer = FixedKernelConv2D("sobel")
    out = keras.ops.convert_to_numpy(layer(rgb))[0]
    np.testing.assert_allclose(out[..., 0], ndimage.correlate(grey, SOBEL_X, mode="constant"), atol=1e-5)
    np.testing.assert_allclose(out[..., 1], ndimage.correlate(grey, SOBEL_Y, mode="constant"), atol=1e-5)
    assert not layer.trainable_weights

    inputs = keras.Input((12, 12, 3))
    model = keras.Model(
        inputs,
        keras.layers.Dense(1)(
            keras.layers.GlobalAveragePooling2D()(FixedKernelConv2D("gabor", trainable=True, name="stem")(inputs))
        ),
    )
    before = model.get_layer("stem").get_weights()[0].copy()
    model.compile("sgd", "mse")
    model.fit(rng.normal(size=(8, 12, 12, 3)), rng.normal(size=(8, 1)), verbose=0)
    assert not np.allclose(model.get_layer("stem").get_weights()[0], before)  # trainable: the bank is only a start
    model.save(tmp_path / "stem.keras")
    loaded = keras.models.load_model(tmp_path / "stem.keras")
    np.testing.assert_allclose(loaded.get_layer("stem").get_weights()[0], model.get_layer("stem").get_weights()[0])
