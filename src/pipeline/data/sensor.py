"""Image formation: a digital camera's sensor array between the scene and the H x W x C array.

Each photosite counts photons for one colour (a Bayer colour filter array: red, green, blue cones' role),
the count is Poisson (shot noise), the readout adds Gaussian read noise, and demosaicing interpolates the
two colours each site did not see (OpenCV's Bayer conversion). At night only rods work: one luminance
channel, no colour. `photons` is the mean photon count of a photosite under full white.
"""

import numpy as np

from pipeline.errors import ConfigError

SENSORS = ("ideal", "bayer", "night")
# the RGGB pattern: row 0 = R G R G ..., row 1 = G B G B ...; OpenCV names a pattern by the second row's
# second and third pixels, so RGGB is its "BG" (checked in tests/test_biology.py against a red scene)
RGGB_CHANNEL = np.array([[0, 1], [1, 2]])
LUMINANCE = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601 weights: what one broad-band receptor sums


def check(sensor: str, photons: float, read_noise: float, key: str = "data.generator") -> None:
    if sensor not in SENSORS:
        raise ConfigError(f"{key}.sensor={sensor!r} is unknown; valid: {', '.join(SENSORS)}")
    if not photons > 0:
        raise ConfigError(f"{key}.photons={photons} is invalid: must be > 0 (mean photons per photosite at full white)")
    if not read_noise >= 0:
        raise ConfigError(f"{key}.read_noise={read_noise} is invalid: must be >= 0 (electrons)")


def expose(signal: np.ndarray, photons: float, read_noise: float, rng: np.random.Generator) -> np.ndarray:
    """Electrons counted by photosites whose light is `signal` in [0, 1] of full white: Poisson(signal ·
    photons) plus N(0, read_noise²). Mean signal · photons, variance signal · photons + read_noise²."""
    return rng.poisson(np.clip(signal, 0, 1) * photons).astype(np.float64) + rng.normal(0, read_noise, signal.shape)


def to_digital(electrons: np.ndarray, photons: float) -> np.ndarray:
    """8-bit values: full white (`photons` electrons) is 255."""
    return np.clip(np.round(electrons / photons * 255), 0, 255).astype(np.uint8)


def mosaic(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) -> (H, W): each photosite keeps the one colour its RGGB filter passes."""
    height, width = image.shape[:2]
    rows, cols = np.mgrid[0:height, 0:width]
    return np.take_along_axis(image, RGGB_CHANNEL[rows % 2, cols % 2][..., None], axis=-1)[..., 0]


def demosaic(raw: np.ndarray) -> np.ndarray:
    """(H, W) uint8 RGGB mosaic -> (H, W, 3) RGB by OpenCV's bilinear Bayer interpolation."""
    import cv2

    return cv2.cvtColor(raw, cv2.COLOR_BayerBG2RGB)


def capture(
    image: np.ndarray, sensor: str = "ideal", photons: float = 1000.0, read_noise: float = 2.0, rng=None
) -> np.ndarray:
    """The scene `image` (H, W, 3) uint8 as the sensor records it, (H, W, 3) uint8:
    ideal: unchanged; bayer: RGGB mosaic, shot and read noise, demosaiced; night: luminance only (rods), with
    shot and read noise, repeated in R, G and B."""
    check(sensor, photons, read_noise)
    if sensor == "ideal":
        return image
    rng = rng if rng is not None else np.random.default_rng(0)
    scene = image.astype(np.float64) / 255
    if sensor == "bayer":
        return demosaic(to_digital(expose(mosaic(scene), photons, read_noise, rng), photons))
    grey = to_digital(expose(scene @ LUMINANCE, photons, read_noise, rng), photons)
    return np.repeat(grey[..., None], 3, axis=-1)
