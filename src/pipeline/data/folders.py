"""Read a segmentation set laid out as root/{split}/images/*.png|jpg with root/{split}/masks/<stem>.png.

The generated shapes set uses exactly this layout, so a user's own folders load the same way.
"""

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from pipeline.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def open_image(path: Path, mode: str) -> Image.Image:
    try:
        with Image.open(path) as img:
            img.load()
            return img.convert(mode)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DataError(f"{path}: not a readable image ({err.__class__.__name__}: {err})") from None


def folder_pairs(root: str | Path, split: str) -> list[tuple[Path, Path]]:
    """(image, mask) paths of root/split/images/* and root/split/masks/<stem>.png, sorted by name."""
    folder = Path(root) / split
    image_dir, mask_dir = folder / "images", folder / "masks"
    for needed in (image_dir, mask_dir):
        if not needed.is_dir():
            raise DataError(f"{needed}: folder not found (expected {folder}/images and {folder}/masks)")
    paths = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise DataError(f"{image_dir}: no images ({', '.join(IMAGE_SUFFIXES)}) in split '{split}'")
    return [(path, mask_dir / f"{path.stem}.png") for path in paths]


def load_pairs(
    pairs: list[tuple[Path, Path]], num_classes: int, image_size: int | None = None, label_offset: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, H, W, 3) uint8 and masks (N, H, W) uint8 from (image, mask) file pairs.

    Mask values minus `label_offset` are the class labels (the Oxford pets trimaps count from 1).
    With `image_size` set, images are resized (bilinear) and masks (nearest) to that square size.
    Every mask is checked: it must exist, match its image's size, and hold labels 0..num_classes-1.
    """
    images, masks = [], []
    for path, mask_path in pairs:
        if not mask_path.is_file():
            raise DataError(f"{mask_path}: mask missing for image {path}")
        image, mask = open_image(path, "RGB"), open_image(mask_path, "L")
        if image.size != mask.size:
            raise DataError(
                f"{mask_path}: mask is {mask.size[0]}x{mask.size[1]} but its image is {image.size[0]}x{image.size[1]}"
            )
        if image_size is not None and image.size != (image_size, image_size):
            image = image.resize((image_size, image_size), Image.BILINEAR)
            mask = mask.resize((image_size, image_size), Image.NEAREST)
        labels = np.asarray(mask, dtype=np.int16) - label_offset
        if labels.min() < 0 or labels.max() >= num_classes:
            bad = labels.min() if labels.min() < 0 else labels.max()
            raise DataError(
                f"{mask_path}: label {bad + label_offset} out of range, valid labels are "
                f"{label_offset}..{num_classes - 1 + label_offset}"
            )
        images.append(np.asarray(image, dtype=np.uint8))
        masks.append(labels.astype(np.uint8))
    if len({im.shape for im in images}) > 1:
        raise DataError(f"{pairs[0][0].parent}: images differ in size; set data.image_size to resize them to one size")
    return np.stack(images), np.stack(masks)


def load_split(
    root: str | Path, split: str, num_classes: int, image_size: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """One split of the root/{split}/{images,masks} layout (see load_pairs)."""
    return load_pairs(folder_pairs(root, split), num_classes, image_size)
