"""Read a segmentation set laid out as root/{split}/images/*.png|jpg with root/{split}/masks/<stem>.png.

The generated shapes set uses exactly this layout, so a user's own folders load the same way.
"""

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from pipeline.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def _open(path: Path, mode: str) -> Image.Image:
    try:
        with Image.open(path) as img:
            img.load()
            return img.convert(mode)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DataError(f"{path}: not a readable image ({err.__class__.__name__}: {err})") from None


def load_split(
    root: str | Path, split: str, num_classes: int, image_size: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, H, W, 3) uint8 and masks (N, H, W) uint8 of one split, sorted by file name.

    With `image_size` set, images are resized (bilinear) and masks (nearest) to that square size.
    Every mask is checked: it must exist, match its image's size, and hold labels < num_classes.
    """
    folder = Path(root) / split
    image_dir, mask_dir = folder / "images", folder / "masks"
    for needed in (image_dir, mask_dir):
        if not needed.is_dir():
            raise DataError(f"{needed}: folder not found (expected {folder}/images and {folder}/masks)")
    paths = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise DataError(f"{image_dir}: no images ({', '.join(IMAGE_SUFFIXES)}) in split '{split}'")
    images, masks = [], []
    for path in paths:
        mask_path = mask_dir / f"{path.stem}.png"
        if not mask_path.is_file():
            raise DataError(f"{mask_path}: mask missing for image {path}")
        image, mask = _open(path, "RGB"), _open(mask_path, "L")
        if image.size != mask.size:
            raise DataError(
                f"{mask_path}: mask is {mask.size[0]}x{mask.size[1]} but its image is {image.size[0]}x{image.size[1]}"
            )
        if image_size is not None and image.size != (image_size, image_size):
            image = image.resize((image_size, image_size), Image.BILINEAR)
            mask = mask.resize((image_size, image_size), Image.NEAREST)
        mask_array = np.asarray(mask, dtype=np.uint8)
        if mask_array.max() >= num_classes:
            raise DataError(
                f"{mask_path}: label {mask_array.max()} out of range, valid labels are 0..{num_classes - 1}"
            )
        images.append(np.asarray(image, dtype=np.uint8))
        masks.append(mask_array)
    if len({im.shape for im in images}) > 1:
        raise DataError(f"{image_dir}: images differ in size; set data.image_size to resize them to one size")
    return np.stack(images), np.stack(masks)
