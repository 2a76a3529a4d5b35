"""An image file's values as they really are, and the one mapping (`data.intensity`) to what the model sees.

Models take pixel values in 0..255 (they rescale inside). An 8-bit file is that already. A 16-bit PNG or
TIFF (a microscope's 12-bit camera, a medical scanner) or a 32-bit float TIFF is not: Pillow's own
conversion to "RGB" or "L" clips every 16-bit grey value above 255 and keeps only the high byte of 16-bit
colour, without a word. Here such a file is read at its full depth (Pillow for grey, OpenCV for 16-bit
colour, which Pillow cannot hold) and mapped by `Intensity`:

    auto        the file type's full range: 8-bit as it is, 16-bit 0..65535, float 0..1 (a float image
                outside 0..1 is refused, naming the values found)
    range       [lo, hi] -> [0, 255]; values outside are clipped (asked for: the data profile counts them)
    percentile  [p_lo, p_hi] of each image -> [0, 255], the normalisation microscopy tools apply

The mapped image is rounded to 8 bits (256 levels over the chosen range). The mapping is recorded with the
run and travels with the logged model (pipeline.deploy.serving applies it to raw arrays), so predict, serving and
training see the same values.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.config.options import INTENSITY_MODES
from pipeline.errors import ConfigError, DataError

GRAY_MODES = ("1", "L", "LA", "P", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")
HIGH_DEPTH_MODES = {"I;16": 16, "I;16B": 16, "I;16L": 16, "I;16N": 16, "I": 32, "F": 32}


def bit_depth(img: Image.Image) -> int:
    """Bits per channel of an opened image, asked before img.load() (which empties the tile list that tells
    it): 16 for 16-bit grey or colour PNG/TIFF (Pillow opens 16-bit colour as mode RGB and would drop the low
    byte), 32 for int32/float, else 8."""
    if img.mode in HIGH_DEPTH_MODES:
        return HIGH_DEPTH_MODES[img.mode]
    raw = str(img.tile[0].args[0] if isinstance(img.tile[0].args, tuple) else img.tile[0].args) if img.tile else ""
    return 16 if ";16" in raw else 8


def describe(img: Image.Image) -> str:
    """'16-bit grey', '8-bit RGB', '32-bit float grey': what a person calls the file's pixels."""
    depth = bit_depth(img)
    kind = "float " if img.mode == "F" else ""
    colour = "grey" if img.mode in GRAY_MODES and img.mode != "P" else img.mode
    return f"{depth}-bit {kind}{colour}"


def read_header(path: Path) -> tuple[str, tuple[int, int] | None]:
    """(kind, (width, height)) of an image file from its header alone; ("unreadable", None) if it is not one.
    Cached by path, size and modification time: choosing data.channels=auto and profiling the data read each
    header once."""
    try:
        stat = Path(path).stat()
    except OSError:
        return "unreadable", None
    return _header(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=2**17)
def _header(path: str, size: int, mtime_ns: int) -> tuple[str, tuple[int, int] | None]:
    from PIL import UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return describe(img), img.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return "unreadable", None


def count_kinds(paths: list[Path]) -> dict[str, int]:
    """How many files of each kind ('8-bit RGB', '16-bit grey', ...), from their headers."""
    kinds: dict[str, int] = {}
    for path in paths:
        kind = read_header(path)[0]
        kinds[kind] = kinds.get(kind, 0) + 1
    return kinds


def read_values(path: Path, img: Image.Image, depth: int | None = None) -> np.ndarray:
    """The file's pixels (H, W, C) at their own depth: uint8, uint16, int32 or float32 (`depth`: bit_depth(img)
    taken before the image was loaded)."""
    depth = bit_depth(img) if depth is None else depth
    if img.mode in HIGH_DEPTH_MODES:
        values = np.asarray(img)
        values = values.astype(values.dtype.newbyteorder("=")) if values.dtype.byteorder == ">" else values
        return values[..., None]
    if depth == 16:  # 16-bit colour: OpenCV keeps it (as BGR), Pillow cannot
        import cv2

        values = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if values is None or values.ndim != 3:
            raise DataError(f"{path}: a 16-bit colour image OpenCV cannot read")
        return values[..., [2, 1, 0]] if values.shape[-1] == 3 else values[..., [2, 1, 0, 3]][..., :3]
    rgb = img.convert("RGB") if img.mode not in ("L", "RGB") else img
    values = np.asarray(rgb)
    return values if values.ndim == 3 else values[..., None]


@dataclass(frozen=True)
class Intensity:
    """data.intensity: how a file's values become the model's 0..255 (see the module docstring)."""

    mode: str = "auto"
    range: tuple[float, float] | None = None
    percentiles: tuple[float, float] = (1.0, 99.8)

    @classmethod
    def from_config(cls, config) -> Intensity:
        """From data.intensity ({mode, range, percentiles}; a plain string is the mode), checked."""
        if config is None:
            return cls()
        if isinstance(config, str):
            config = {"mode": config}
        config = dict(config)
        mode = config.get("mode", "auto")
        if mode not in INTENSITY_MODES:
            raise ConfigError(f"data.intensity.mode={mode!r} is unknown; valid: {', '.join(INTENSITY_MODES)}")
        bounds = config.get("range")
        if mode == "range":
            if bounds is None or len(bounds) != 2 or not float(bounds[0]) < float(bounds[1]):
                raise ConfigError(
                    f"data.intensity.range={None if bounds is None else list(bounds)} is invalid for mode=range: "
                    "must be [lo, hi] with lo < hi, e.g. data.intensity.range=[0,4095] for a 12-bit camera"
                )
            bounds = (float(bounds[0]), float(bounds[1]))
        else:
            bounds = None
        percentiles = tuple(float(p) for p in config.get("percentiles") or (1.0, 99.8))
        if len(percentiles) != 2 or not 0 <= percentiles[0] < percentiles[1] <= 100:
            raise ConfigError(
                f"data.intensity.percentiles={list(percentiles)} is invalid: must be [lo, hi] with 0 <= lo < hi <= 100"
            )
        return cls(mode, bounds, percentiles)

    def as_dict(self) -> dict:
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}

    def __str__(self) -> str:
        if self.mode == "range":
            return f"range {self.range[0]:g}..{self.range[1]:g} -> 0..255"
        if self.mode == "percentile":
            return f"percentiles {self.percentiles[0]:g}..{self.percentiles[1]:g} of each image -> 0..255"
        return "auto (the file type's full range -> 0..255)"

    def identity_for(self, values: np.ndarray) -> bool:
        """True when the mapping leaves these values as they are (8-bit, auto)."""
        return self.mode == "auto" and values.dtype == np.uint8

    def bounds(self, values: np.ndarray, path: Path | str = "image") -> tuple[float, float]:
        """The input values that map to 0 and to 255."""
        if self.mode == "range":
            return self.range
        if self.mode == "percentile":
            lo, hi = np.percentile(values, self.percentiles)
            return float(lo), float(hi)
        if values.dtype == np.uint8:
            return 0.0, 255.0
        if values.dtype == np.uint16:
            return 0.0, 65535.0
        if np.issubdtype(values.dtype, np.floating):
            low, high = float(np.nanmin(values)), float(np.nanmax(values))
            if low < 0 or high > 1:
                raise DataError(
                    f"{path}: float image with values {low:g}..{high:g}, outside 0..1 (data.intensity.mode=auto "
                    f"takes a float image as 0..1); valid: data.intensity.mode=range data.intensity.range=[lo,hi] "
                    "(e.g. the sensor's range), or data.intensity.mode=percentile"
                )
            return 0.0, 1.0
        high = float(values.max())
        if values.min() >= 0 and high <= 65535:  # a 16-bit file Pillow opened as 32-bit integers
            return 0.0, 65535.0
        raise DataError(
            f"{path}: {values.dtype} image with values {float(values.min()):g}..{high:g}; valid: "
            "data.intensity.mode=range data.intensity.range=[lo,hi], or data.intensity.mode=percentile"
        )

    def to_uint8(self, values: np.ndarray, path: Path | str = "image") -> np.ndarray:
        """values (H, W, C) of any depth -> uint8 (H, W, C) in 0..255, by the mapping."""
        if self.identity_for(values):
            return values
        lo, hi = self.bounds(values, path)
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        mapped = (values.astype(np.float64) - lo) * scale
        return np.rint(np.clip(np.nan_to_num(mapped), 0, 255)).astype(np.uint8)

    def clipped_fraction(self, values: np.ndarray, path: Path | str = "image") -> float:
        """The share of values outside the mapped range (clipped to 0 or 255): what the profile reports."""
        if self.identity_for(values):
            return 0.0
        lo, hi = self.bounds(values, path)
        return float(np.mean((values < lo) | (values > hi)))


AUTO = Intensity()


def open_mapped(path: Path, img: Image.Image, intensity: Intensity, depth: int) -> Image.Image:
    """The loaded image as an 8-bit Pillow image (L or RGB), mapped by `intensity` when the file is deeper than
    8 bits (`depth`, taken before loading) or the mapping is not the identity; an 8-bit file under auto is
    returned as it is (Pillow's own conversions then apply, unchanged)."""
    if intensity.mode == "auto" and depth == 8:
        return img
    mapped = intensity.to_uint8(read_values(path, img, depth), path)
    return Image.fromarray(mapped[..., 0] if mapped.shape[-1] == 1 else mapped)


def served_mapping(intensity: Intensity, kinds: dict[str, int]) -> Intensity | None:
    """The mapping a served model applies to raw values: the run's own, with `auto` made explicit from the
    kinds of file it was trained on (16-bit: 0..65535, float: 0..1); None when the inputs are 8-bit already
    (or of mixed depths, which auto maps per file type: the profile warns)."""
    if intensity.mode != "auto":
        return intensity
    known = [kind for kind in kinds if kind != "unreadable"]
    if known and all("float" in kind for kind in known):
        return Intensity("range", (0.0, 1.0))
    if known and all(kind.startswith("16-bit") for kind in known):
        return Intensity("range", (0.0, 65535.0))
    return None
