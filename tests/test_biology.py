"""The lecture's opening: centre-surround receptive fields, the camera sensor, simple and complex cells.
Each is checked against an independent reference (scipy, OpenCV, the Poisson variance, the stimulus itself)."""

import math

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from helpers import run_here
from pipeline.data.sensor import LUMINANCE, capture, expose, mosaic
from pipeline.errors import ConfigError
from pipeline.lecture.biology import bar, grating, measure_cells, simple_cell
from pipeline.lecture.kernels import correlate2d, difference_of_gaussians, dog_bank, gabor


@pytest.mark.parametrize(
    ("size", "centre", "surround", "balance"), [(9, 1.0, 2.0, 1.0), (15, 1.5, 2.4, 0.8), (7, 0.8, 3.0, 1.0)]
)
def test_dog_is_scipys_gaussian_difference_of_an_impulse(size, centre, surround, balance):
    half = size // 2
    impulse = np.zeros((size, size))
    impulse[half, half] = 1.0
    blurred = [gaussian_filter(impulse, s, mode="constant", truncate=half / s) for s in (centre, surround)]
    expected = blurred[0] - balance * blurred[1]
    np.testing.assert_allclose(difference_of_gaussians(size, centre, surround, balance), expected, atol=1e-6)
    np.testing.assert_allclose(difference_of_gaussians(size, centre, surround, balance, on=False), -expected, atol=1e-6)


def test_a_balanced_centre_surround_cell_ignores_a_uniform_field_and_sees_a_spot():
    kernel = difference_of_gaussians(9, 1.0, 2.0, balance=1.0)
    flat = np.full((20, 20), 173.0)
    np.testing.assert_allclose(correlate2d(flat, kernel), 0.0, atol=1e-3)
    spot = np.zeros((21, 21))
    spot[9:12, 9:12] = 1.0  # a small bright spot on the centre: ON excited, OFF inhibited
    on, off = correlate2d(spot, kernel)[6, 6], correlate2d(spot, -kernel)[6, 6]
    assert on > 0.3 and off == pytest.approx(-on)
    bank = dog_bank(9, ((1.0, 2.0), (2.0, 4.0)))
    assert bank.shape == (9, 9, 1, 4) and np.allclose(bank[..., 0], -bank[..., 1])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sigma_center": 2.0, "sigma_surround": 2.0}, "sigma_surround=2.0 is invalid: must be > sigma_center=2.0"),
        ({"sigma_center": 0.0}, "sigma_center=0.0 is invalid: must be > 0"),
        ({"balance": 1.5}, "balance=1.5 is invalid: must be in [0, 1]"),
    ],
)
def test_impossible_centre_surround_is_refused(kwargs, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        difference_of_gaussians(9, **kwargs)


def test_the_dog_stem_is_a_fixed_bank_in_front_of_the_unet():
    from pipeline.models import build_model

    model = build_model("unet", (32, 32, 3), 4, depth=2, base_filters=4, stem="dog")
    kernel = model.get_layer("stem").kernel.numpy()
    np.testing.assert_allclose(kernel[:, :, 0, 0] * 3, difference_of_gaussians(9, 1.0, 2.0), atol=1e-6)
    assert not model.get_layer("stem").trainable_weights
    with pytest.raises(ConfigError, match=r"model.stem_options.sigma_surround=1.0 is invalid: must be > sigma_center"):
        build_model("unet", (32, 32, 3), 4, depth=2, base_filters=4, stem="dog", stem_options={"scales": [[2.0, 1.0]]})


def test_the_mosaic_keeps_one_colour_per_photosite_in_rggb_order():
    image = np.stack([np.full((4, 6), 10), np.full((4, 6), 20), np.full((4, 6), 30)], axis=-1)
    raw = mosaic(image)
    assert (raw[0::2, 0::2] == 10).all() and (raw[1::2, 1::2] == 30).all()
    assert (raw[0::2, 1::2] == 20).all() and (raw[1::2, 0::2] == 20).all()


def test_demosaicing_a_noiseless_exposure_gives_the_scene_back():
    """Bright light, no read noise: the pure colours and a smooth colour ramp come back through OpenCV's
    Bayer interpolation (its pattern code matches the RGGB mosaic, or red would turn blue)."""
    for colour in ((200, 0, 0), (0, 200, 0), (0, 0, 200)):
        scene = np.zeros((8, 8, 3), np.uint8) + np.array(colour, np.uint8)
        np.testing.assert_array_equal(capture(scene, "bayer", photons=1e9, read_noise=0.0)[2:6, 2:6], scene[2:6, 2:6])
    y, x = np.mgrid[0:32, 0:32]
    ramp = np.stack([x * 6, y * 6, 255 - x * 4], axis=-1).astype(np.uint8)
    error = np.abs(capture(ramp, "bayer", photons=1e9, read_noise=0.0).astype(int) - ramp)[2:-2, 2:-2]
    assert error.max() <= 2


@pytest.mark.parametrize("photons", [1.0, 10.0, 100.0, 1000.0])
def test_the_shot_noise_is_poisson_at_every_light_level(photons):
    """Mean signal · photons and variance signal · photons + read_noise², measured over 200,000 photosites."""
    rng = np.random.default_rng(0)
    signal, read_noise = 0.4, 2.0
    electrons = expose(np.full(200_000, signal), photons, read_noise, rng)
    mean, variance = signal * photons, signal * photons + read_noise**2
    assert electrons.mean() == pytest.approx(mean, rel=0.02, abs=0.02)
    assert electrons.var() == pytest.approx(variance, rel=0.03)


def test_night_vision_is_luminance_only():
    rng = np.random.default_rng(0)
    scene = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    night = capture(scene, "night", photons=1e7, read_noise=0.0, rng=rng)
    assert (night[..., 0] == night[..., 1]).all() and (night[..., 1] == night[..., 2]).all()
    np.testing.assert_allclose(night[..., 0], scene @ LUMINANCE, atol=1.0)  # rods sum the light, no colour
    dim = capture(scene, "night", photons=5.0, read_noise=2.0, rng=rng).astype(float)
    assert np.abs(dim[..., 0] - scene @ LUMINANCE).mean() > 20  # few photons: a noisy picture


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.generator.sensor=infrared", "data.generator.sensor='infrared' is unknown; valid: ideal, bayer, night"),
        ("data.generator.photons=0", "data.generator.photons=0 is invalid: must be > 0"),
        ("data.generator.read_noise=-1", "data.generator.read_noise=-1 is invalid: must be >= 0"),
    ],
)
def test_a_bad_sensor_setting_is_one_line(project, override, message):
    result = run_here("prepare", project, "trainer=debug", override)
    assert result.returncode == 2, result.stderr[-2000:]
    [line] = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert message in line and "Traceback" not in result.stderr


def test_a_simple_cell_is_tuned_to_orientation_and_position_a_complex_cell_to_orientation_only():
    measured = measure_cells(wavelength=8.0, size=15)
    numbers = measured.summary()
    assert numbers["simple_preferred_deg"] == 0 and numbers["complex_preferred_deg"] == 0
    assert numbers["simple_tuning_width_deg"] < 60 and numbers["complex_tuning_width_deg"] < 60
    assert numbers["simple_range_over_one_period"] > 0.9  # silent at the wrong phase
    assert numbers["complex_range_over_one_period"] <= numbers["simple_range_over_one_period"] / 4
    energy = measure_cells(wavelength=8.0, size=15, pooling="energy").summary()
    assert energy["complex_range_over_one_period"] <= numbers["simple_range_over_one_period"] / 4


def test_a_simple_cell_responds_to_its_bar_only_where_its_on_zone_is():
    even = gabor(15, 8.0, 0.0).real
    centred, shifted = simple_cell(bar(31, 0.0, 0.0), even), simple_cell(bar(31, 0.0, 4.0), even)
    turned = simple_cell(bar(31, math.pi / 2, 0.0), even)
    assert centred > 3 * max(shifted, turned)
    assert grating(9, 4.0, 0.0)[4, 4] == pytest.approx(1.0)
