"""Read a segmentation set laid out as root/{split}/images/*.png|jpg with root/{split}/masks/<stem>.png.

The generated shapes set uses exactly this layout, so a user's own folders load the same way.
"""

import logging
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from pipeline.errors import DataError

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")


class BadFiles:
    """What a loader does with a file it cannot use: `error` raises its DataError; `skip` (data.on_bad_file=skip)
    warns, remembers it in `skipped` (path -> reason), and goes on."""

    def __init__(self, policy: str = "error"):
        self.policy, self.skipped = policy, {}

    def handle(self, err: DataError, path: Path) -> None:
        if self.policy != "skip":
            raise err
        if str(path) not in self.skipped:
            log.warning("skipping %s", err)
            self.skipped[str(path)] = str(err)


def open_image(path: Path, mode: str, grayscale: str = "convert") -> Image.Image:
    """The image at path converted to mode; with grayscale="error" a grey image where RGB is expected is refused."""
    try:
        with Image.open(path) as img:
            img.load()
            if grayscale == "error" and mode == "RGB" and img.mode in GRAY_MODES:
                raise DataError(
                    f"{path}: grayscale image (mode {img.mode}) where RGB is expected; valid: an RGB image, or "
                    "data.grayscale=convert to repeat its grey level in R, G and B"
                )
            return img.convert(mode)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        if isinstance(err, DataError):
            raise
        raise DataError(f"{path}: not a readable image ({err.__class__.__name__}: {err})") from None


def image_files(folder: Path, bad: BadFiles | None = None) -> list[Path]:
    """The image files of folder, sorted; any other file (hidden ones aside) is a bad file."""
    bad = bad or BadFiles()
    files = []
    for path in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        if path.suffix.lower() in IMAGE_SUFFIXES:
            files.append(path)
        else:
            bad.handle(DataError(f"{path}: not an image file; valid suffixes: {', '.join(IMAGE_SUFFIXES)}"), path)
    return files


def folder_pairs(root: str | Path, split: str, bad: BadFiles | None = None) -> list[tuple[Path, Path]]:
    """(image, mask) paths of root/split/images/* and root/split/masks/<stem>.png, sorted by name."""
    folder = Path(root) / split
    image_dir, mask_dir = folder / "images", folder / "masks"
    for needed in (image_dir, mask_dir):
        if not needed.is_dir():
            raise DataError(f"{needed}: folder not found (expected {folder}/images and {folder}/masks)")
    paths = image_files(image_dir, bad)
    if not paths:
        raise DataError(f"{image_dir}: no images ({', '.join(IMAGE_SUFFIXES)}) in split '{split}'")
    return [(path, mask_dir / f"{path.stem}.png") for path in paths]


def load_pairs(
    pairs: list[tuple[Path, Path]],
    num_classes: int,
    image_size: int | None = None,
    label_offset: int = 0,
    bad: BadFiles | None = None,
    grayscale: str = "error",
) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, H, W, 3) uint8 and masks (N, H, W) uint8 from (image, mask) file pairs, decoded now.

    Mask values minus `label_offset` are the class labels (the Oxford pets trimaps count from 1).
    With `image_size` set, images are resized (bilinear) and masks (nearest) to that square size.
    Every mask is checked: it must exist, match its image's size, and hold labels 0..num_classes-1.
    A pair that fails a check raises its DataError, or is skipped when `bad` says so.
    """
    from pipeline.data.samples import decode_all

    shape = (image_size or 0, image_size or 0, 3)
    decode = PairDecoder(num_classes, image_size, label_offset, grayscale)
    return decode_all(pair_samples(pairs, decode, shape), bad).arrays()


def pair_samples(pairs, decode, image_shape, random_crop: int | None = None):
    """(image, mask) file pairs as a split that decodes each pair when read."""
    from pipeline.data.samples import FileSamples

    return FileSamples(list(pairs), decode, image_shape, "mask", random_crop)


def fit_image(image: Image.Image, size: int | None, fit: str = "stretch", centre: bool = True, mask=None):
    """An image (and its mask, nearest-neighbour) brought to size x size: `stretch` resizes to the square;
    `crop` scales the shorter side to size, then takes the centre square (or, with centre=False, leaves the
    longer side for a random crop per batch)."""
    if size is None or image.size == (size, size):
        return image, mask
    if fit == "stretch":
        new = (size, size)
    else:
        scale = size / min(image.size)
        new = tuple(max(size, round(side * scale)) for side in image.size)
    image = image.resize(new, Image.BILINEAR)
    mask = None if mask is None else mask.resize(new, Image.NEAREST)
    if fit == "crop" and centre:
        left, top = (new[0] - size) // 2, (new[1] - size) // 2
        box = (left, top, left + size, top + size)
        image, mask = image.crop(box), None if mask is None else mask.crop(box)
    return image, mask


class PairDecoder:
    """Decodes one (image, mask) pair: checked, labels shifted by label_offset, brought to image_size."""

    def __init__(self, num_classes, image_size, label_offset=0, grayscale="error", fit="stretch", centre=True):
        self.num_classes, self.image_size, self.label_offset = num_classes, image_size, label_offset
        self.grayscale, self.fit, self.centre = grayscale, fit, centre

    def __call__(self, path: Path, mask_path: Path) -> tuple[np.ndarray, np.ndarray]:
        if not Path(mask_path).is_file():
            raise DataError(f"{mask_path}: mask missing for image {path}")
        image, mask = open_image(path, "RGB", self.grayscale), open_image(mask_path, "L")
        if image.size != mask.size:
            raise DataError(
                f"{mask_path}: mask is {mask.size[0]}x{mask.size[1]} but its image is {image.size[0]}x{image.size[1]}"
            )
        image, mask = fit_image(image, self.image_size, self.fit, self.centre, mask)
        labels = np.asarray(mask, dtype=np.int16) - self.label_offset
        if labels.min() < 0 or labels.max() >= self.num_classes:
            wrong = labels.min() if labels.min() < 0 else labels.max()
            raise DataError(
                f"{mask_path}: label {wrong + self.label_offset} out of range, valid labels are "
                f"{self.label_offset}..{self.num_classes - 1 + self.label_offset}"
            )
        return np.asarray(image, dtype=np.uint8), labels.astype(np.uint8)


class ImageDecoder:
    """Decodes one image file of a classification set into (image, its label), brought to image_size."""

    def __init__(self, image_size, mode="RGB", grayscale="error", fit="stretch", centre=True):
        self.image_size, self.mode, self.grayscale, self.fit, self.centre = image_size, mode, grayscale, fit, centre

    def __call__(self, path: Path, label) -> tuple[np.ndarray, np.ndarray]:
        image, _ = fit_image(open_image(path, self.mode, self.grayscale), self.image_size, self.fit, self.centre)
        array = np.asarray(image, dtype=np.uint8)
        return array.reshape(*array.shape[:2], -1), np.asarray(label)


def load_split(
    root: str | Path,
    split: str,
    num_classes: int,
    image_size: int | None = None,
    bad: BadFiles | None = None,
    grayscale: str = "error",
) -> tuple[np.ndarray, np.ndarray]:
    """One split of the root/{split}/{images,masks} layout (see load_pairs)."""
    return load_pairs(folder_pairs(root, split, bad), num_classes, image_size, bad=bad, grayscale=grayscale)


def resize_image(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """An (H, W, C) uint8 image resized (bilinear) to shape = (height, width), keeping its channel axis."""
    height, width = shape
    if image.shape[:2] == (height, width):
        return image
    resized = np.asarray(
        Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image).resize((width, height), Image.BILINEAR)
    )
    return resized.reshape(height, width, image.shape[-1])


def read_images(paths: list[Path], channels: int) -> list[np.ndarray]:
    """Each file as an (H, W, channels) uint8 array at its own size: grey (L) for 1 channel, else RGB."""
    mode = "L" if channels == 1 else "RGB"
    images = []
    for path in paths:
        image = np.asarray(open_image(path, mode))
        images.append(image.reshape(*image.shape[:2], channels))
    return images
