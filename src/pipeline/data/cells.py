"""A generated grey microscopy-like set at a camera's bit depth: the own-data features' test bed.

Bright round cells on a camera offset (background ~1000 of a 12-bit range 0..4095), with shot-like noise,
saved as 16-bit TIFFs (or the same values scaled to 8-bit PNGs), with 0/255 masks as annotation tools export
them; in the folder layout (`data=folder`): <root>/{split}/images/*, <root>/{split}/masks/*.png.
"""

from pathlib import Path

import numpy as np
from PIL import Image

TOP = 4095  # a 12-bit camera


def cells(rng: np.random.Generator, size: int = 32, offset: float = 1000) -> tuple[np.ndarray, np.ndarray]:
    """One image (uint16 values) and its mask (0/1): 1-3 cells of radius 3-6 px."""
    yy, xx = np.mgrid[:size, :size]
    mask = np.zeros((size, size), np.uint8)
    for _ in range(rng.integers(1, 4)):
        cy, cx, r = rng.integers(6, size - 6), rng.integers(6, size - 6), rng.integers(3, 7)
        mask[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 1
    values = offset + mask * rng.uniform(900, 2200) + rng.normal(0, 120, (size, size))
    return np.clip(values, 0, TOP).astype(np.uint16), mask


def write_cells(root, counts: dict[str, int], bits: int = 16, seed: int = 0, size: int = 32) -> Path:
    """The set under root: 16-bit TIFFs, or (bits=8) the same values scaled by hand to 8-bit PNGs
    (round(v * 255 / 4095)); masks 0/255 (data.mask_values=[0,255])."""
    root, rng = Path(root), np.random.default_rng(seed)
    suffix = ".tif" if bits == 16 else ".png"
    for split, count in counts.items():
        (root / split / "images").mkdir(parents=True, exist_ok=True)
        (root / split / "masks").mkdir(parents=True, exist_ok=True)
        for i in range(count):
            values, mask = cells(rng, size)
            image = values if bits == 16 else np.rint(values.astype(np.float64) * 255 / TOP).astype(np.uint8)
            Image.fromarray(image).save(root / split / "images" / f"cell{i:03d}{suffix}")
            Image.fromarray(mask * 255).save(root / split / "masks" / f"cell{i:03d}.png")
    return root
