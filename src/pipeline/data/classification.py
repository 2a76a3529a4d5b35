"""Classification sets: the handwritten digits bundled with scikit-learn (real data, offline).

Returned as images (N, H, W, C) uint8 and labels (N,) int, split reproducibly (stratified).
"""

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from pipeline.errors import ConfigError


def resize_all(images: np.ndarray, size: int) -> np.ndarray:
    """(N, h, w, C) uint8 -> (N, size, size, C), bilinear."""
    if images.shape[1:3] == (size, size):
        return images
    channels = images.shape[-1]
    out = [
        np.asarray(Image.fromarray(im[..., 0] if channels == 1 else im).resize((size, size), Image.BILINEAR))
        for im in images
    ]
    out = np.stack(out)
    return out[..., None] if channels == 1 else out


def stratified_splits(
    images: np.ndarray, labels: np.ndarray, val_fraction: float, test_fraction: float, seed: int
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """train / val / test with every class in the same proportion in each, fixed by `seed`."""
    if not (0 < test_fraction < 1 and 0 < val_fraction < 1 and val_fraction + test_fraction < 1):
        raise ConfigError(
            f"data.val_fraction={val_fraction}, data.test_fraction={test_fraction}: each in (0, 1), sum < 1"
        )
    x_rest, x_test, y_rest, y_test = train_test_split(
        images, labels, test_size=test_fraction, stratify=labels, random_state=seed
    )
    val_share = val_fraction / (1 - test_fraction)
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest, y_rest, test_size=val_share, stratify=y_rest, random_state=seed
    )
    return {"train": (x_train, y_train), "val": (x_val, y_val), "test": (x_test, y_test)}


def digits(image_size: int = 32, val_fraction: float = 0.1, test_fraction: float = 0.2, seed: int = 0):
    """scikit-learn's 1,797 8x8 digits (UCI, 16 grey levels), scaled to 0..255 and upsampled to image_size."""
    bunch = load_digits()
    images = (bunch.images * (255.0 / 16.0)).round().astype(np.uint8)[..., None]
    return stratified_splits(resize_all(images, image_size), bunch.target, val_fraction, test_fraction, seed)
