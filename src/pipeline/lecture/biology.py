"""The lecture's biological inspirations, computed: simple and complex cells of the primary visual cortex.

A simple cell is one oriented filter (an even Gabor, Hubel & Wiesel's "simple" receptive field) followed
by rectification: it is tuned to orientation AND to where the pattern falls (its phase). A complex cell
pools simple cells of the same orientation over a neighbourhood, by their maximum (as a CNN's max
pooling does) or by their energy (the sum of squares of a quadrature pair: Adelson & Bergen 1985): it keeps
the orientation tuning and loses the dependence on position. The measurements below put numbers on both.
"""

import math
from dataclasses import dataclass

import numpy as np

from pipeline.errors import ConfigError
from pipeline.lecture.kernels import gabor

COMPLEX_POOLING = ("max", "energy")


def grating(size: int, wavelength: float, theta: float, phase: float = 0.0) -> np.ndarray:
    """A sinusoidal grating in [-1, 1], its stripes perpendicular to direction theta (radians)."""
    half = size // 2
    y, x = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float64)
    return np.cos(2 * math.pi * (x * math.cos(theta) + y * math.sin(theta)) / wavelength + phase)


def bar(size: int, theta: float, offset: float = 0.0, width: float = 2.0) -> np.ndarray:
    """A bright bar (1 on 0) through the centre shifted by `offset` pixels along direction theta; the bar runs
    perpendicular to theta (so a grating and a bar of the same theta share their orientation)."""
    half = size // 2
    y, x = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float64)
    distance = x * math.cos(theta) + y * math.sin(theta) - offset
    return (np.abs(distance) <= width / 2).astype(np.float64)


def simple_cell(stimulus: np.ndarray, kernel: np.ndarray) -> float:
    """The rectified response of one simple cell centred on the stimulus: max(0, <kernel, stimulus>)."""
    size = kernel.shape[0]
    half, centre = size // 2, stimulus.shape[0] // 2
    patch = stimulus[centre - half : centre + half + 1, centre - half : centre + half + 1]
    return max(0.0, float(np.sum(kernel * patch)))


def complex_cell(
    stimulus: np.ndarray, wavelength: float, theta: float, size: int, pooling: str = "max", reach: int = 0
):
    """A complex cell of preferred orientation theta: the max of rectified simple cells (even Gabors) whose
    centres lie within `reach` pixels of the stimulus centre (pooling="max"; reach defaults to half a
    wavelength, so the pooled positions span one period), or the energy of a quadrature pair at the centre
    (pooling="energy": even² + odd²)."""
    if pooling not in COMPLEX_POOLING:
        raise ConfigError(f"pooling={pooling!r} is unknown; valid: {', '.join(COMPLEX_POOLING)}")
    kernel = gabor(size, wavelength, theta)
    if pooling == "energy":
        half, centre = size // 2, stimulus.shape[0] // 2
        patch = stimulus[centre - half : centre + half + 1, centre - half : centre + half + 1]
        return float(np.sum(kernel.real * patch) ** 2 + np.sum(kernel.imag * patch) ** 2) ** 0.5
    reach = reach or max(1, int(math.ceil(wavelength / 2)))
    even, half = kernel.real, size // 2
    centre = stimulus.shape[0] // 2
    best = 0.0
    for dy in range(-reach, reach + 1):
        for dx in range(-reach, reach + 1):
            y, x = centre + dy, centre + dx
            patch = stimulus[y - half : y + half + 1, x - half : x + half + 1]
            best = max(best, float(np.sum(even * patch)))
    return best


@dataclass
class CellMeasurements:
    """Tuning of a simple and a complex cell of the same preferred orientation (0 rad), to gratings."""

    orientations: np.ndarray  # radians, [0, π)
    phases: np.ndarray  # radians over one period: the grating shifted by one wavelength in all
    simple_orientation: np.ndarray  # response at each orientation (the best phase)
    complex_orientation: np.ndarray
    simple_phase: np.ndarray  # response at the preferred orientation, at each phase (position)
    complex_phase: np.ndarray

    @staticmethod
    def width(curve: np.ndarray, orientations: np.ndarray) -> float:
        """Full width at half maximum of an orientation tuning curve, in degrees (orientation is periodic in π)."""
        peak = int(np.argmax(curve))
        above = np.roll(curve, -peak) >= curve[peak] / 2
        count = int(np.argmin(above)) + int(np.argmin(above[::-1]))  # the run of values above half, around the peak
        step = float(orientations[1] - orientations[0])
        return math.degrees(count * step)

    @staticmethod
    def response_range(curve: np.ndarray) -> float:
        """(max − min) / max of a response over the shifts: 1 = fully position dependent, 0 = invariant."""
        return float((curve.max() - curve.min()) / curve.max()) if curve.max() > 0 else 0.0

    def summary(self) -> dict[str, float]:
        o = self.orientations
        return {
            "simple_preferred_deg": math.degrees(o[int(np.argmax(self.simple_orientation))]),
            "complex_preferred_deg": math.degrees(o[int(np.argmax(self.complex_orientation))]),
            "simple_tuning_width_deg": self.width(self.simple_orientation, o),
            "complex_tuning_width_deg": self.width(self.complex_orientation, o),
            "simple_range_over_one_period": self.response_range(self.simple_phase),
            "complex_range_over_one_period": self.response_range(self.complex_phase),
        }


def measure_cells(
    wavelength: float = 8.0, size: int = 15, orientations: int = 36, phases: int = 16, pooling: str = "max"
) -> CellMeasurements:
    """Sweep gratings over orientation and phase (a shift of one period in `phases` steps) through a simple
    cell (an even Gabor, preferred orientation 0) and a complex cell (`pooling` over simple cells)."""
    canvas = size + 2 * int(math.ceil(wavelength)) + 2  # room for the complex cell's shifted simple cells
    canvas += 1 - canvas % 2
    thetas = np.arange(orientations) * math.pi / orientations
    shifts = np.arange(phases) * 2 * math.pi / phases
    even = gabor(size, wavelength, 0.0).real

    def simple(theta, phase):
        return simple_cell(grating(canvas, wavelength, theta, phase), even)

    def complex_(theta, phase):
        return complex_cell(grating(canvas, wavelength, theta, phase), wavelength, 0.0, size, pooling)

    return CellMeasurements(
        orientations=thetas,
        phases=shifts,
        simple_orientation=np.array([max(simple(t, p) for p in shifts) for t in thetas]),
        complex_orientation=np.array([max(complex_(t, p) for p in shifts) for t in thetas]),
        simple_phase=np.array([simple(0.0, p) for p in shifts]),
        complex_phase=np.array([complex_(0.0, p) for p in shifts]),
    )
