"""Read a segmentation set laid out as root/{split}/images/*.png|jpg|tif with root/{split}/masks/<stem>.png.

The generated shapes set uses exactly this layout, so a user's own folders load the same way. Images of any
bit depth are mapped by data.intensity (pipeline.data.pixels); masks in any common convention are read as
class indices by a MaskReader (index values, a value list such as 0/255, palette PNGs, colour-coded RGB).
"""

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from pipeline.data.pixels import AUTO, GRAY_MODES, Intensity, bit_depth, count_kinds, open_mapped
from pipeline.errors import ConfigError, DataError

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


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


def open_image(path: Path, mode: str, grayscale: str = "convert", intensity: Intensity = AUTO) -> Image.Image:
    """The image at path, its values mapped by `intensity` (any bit depth), converted to mode (L or RGB);
    with grayscale="error" a grey image where RGB is expected is refused."""
    try:
        with Image.open(path) as img:
            depth = bit_depth(img)  # before load, which forgets it
            img.load()
            if grayscale == "error" and mode == "RGB" and img.mode in GRAY_MODES and img.mode != "P":
                raise DataError(
                    f"{path}: grayscale image (mode {img.mode}) where RGB is expected; valid: data.channels=1 for a "
                    "grey model, an RGB image, or data.grayscale=convert to repeat its grey level in R, G and B"
                )
            return open_mapped(Path(path), img, intensity, depth).convert(mode)
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
    decode = PairDecoder(MaskReader(num_classes, label_offset), image_size, ImageReader(3, grayscale))
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


@dataclass(frozen=True)
class ImageReader:
    """How an image file becomes the model's input: `channels` (1: grey, L; 3: RGB), `grayscale` (what a grey
    file does where RGB is expected: error | convert) and the `intensity` mapping of its values."""

    channels: int = 3
    grayscale: str = "error"
    intensity: Intensity = AUTO

    def __call__(self, path: Path) -> Image.Image:
        return open_image(path, "L" if self.channels == 1 else "RGB", self.grayscale, self.intensity)


@dataclass(frozen=True)
class MaskReader:
    """How a mask file becomes class indices (H, W) uint8, in any of the common conventions:

    - index values (0..classes-1, minus `label_offset`): grey PNGs, and palette PNGs read as their indices
      (the Pascal VOC convention: the palette colour is not the class);
    - `values` (data.mask_values): the mask value of each class, e.g. [0, 255] for a 0/255 binary mask;
    - `colors` (data.class_colors): the RGB colour of each class (CamVid/Cityscapes-style colour-coded masks).

    A pixel holding `ignore_label` (loss.ignore_label, e.g. VOC's 255 on object boundaries) is kept as that
    label, which the loss and metrics skip. Anything else is refused, naming the file, the values found and
    the option that would map them."""

    num_classes: int
    label_offset: int = 0
    values: tuple[int, ...] | None = None
    colors: tuple[tuple[int, int, int], ...] | None = None
    ignore_label: int | None = None

    def __call__(self, path: Path) -> np.ndarray:
        try:
            with Image.open(path) as img:
                img.load()
                raw, palette = self._raw(path, img), img.mode == "P"
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
            raise DataError(f"{path}: not a readable mask ({err.__class__.__name__}: {err})") from None
        if self.values is not None:
            labels = np.full(raw.shape, -1, np.int32)
            for label, value in enumerate(self.values):
                labels[raw == value] = label
        else:
            labels = raw - self.label_offset
        if self.ignore_label is not None:
            labels[(raw if self.values is not None else labels) == self.ignore_label] = self.ignore_label
        wrong = (labels < 0) | (labels >= self.num_classes)
        if self.ignore_label is not None:
            wrong &= labels != self.ignore_label
        if wrong.any():
            raise DataError(self._complaint(path, raw, raw[wrong], palette))
        return labels.astype(np.uint8)

    def _raw(self, path: Path, img: Image.Image) -> np.ndarray:
        if self.colors is not None:
            rgb = np.asarray(img.convert("RGB")).astype(np.int32)
            codes = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
            labels = np.full(codes.shape, -1, np.int32)
            for label, (r, g, b) in enumerate(self.colors):
                labels[codes == (r << 16) | (g << 8) | b] = label
            if (labels < 0).any():
                found = np.unique(codes[labels < 0])[:6]
                shown = ", ".join(f"[{c >> 16},{(c >> 8) & 255},{c & 255}]" for c in found)
                raise DataError(
                    f"{path}: colours {shown} are none of data.class_colors "
                    f"({', '.join(str(list(c)) for c in self.colors)}); valid: add each colour to data.class_colors, "
                    "one [r,g,b] per class in data.classes order"
                )
            return labels
        if img.mode in ("RGB", "RGBA"):
            rgb = np.asarray(img.convert("RGB"))
            if not ((rgb[..., 0] == rgb[..., 1]) & (rgb[..., 1] == rgb[..., 2])).all():
                codes = np.unique(rgb.reshape(-1, 3), axis=0)[:6]
                raise DataError(
                    f"{path}: colour-coded mask (colours {', '.join(str(list(c)) for c in codes)}, ...); valid: "
                    "data.class_colors=[[r,g,b],...] with one colour per class in data.classes order"
                )
            return rgb[..., 0].astype(np.int32)
        if img.mode in ("LA", "PA"):  # a grey or palette mask with an alpha channel: the alpha is no class
            img = img.getchannel(0)
        return np.asarray(img).astype(np.int32)  # L, I;16, 1 (bool) as values; P as palette indices

    def _complaint(self, path: Path, raw: np.ndarray, wrong: np.ndarray, palette: bool) -> str:
        found = [int(v) for v in np.unique(raw)[:12]]
        kind = "palette indices" if palette else "values"
        first = int(wrong.flat[0])
        if self.values is not None:
            return (
                f"{path}: mask {kind} {found}; {first} is none of data.mask_values={list(self.values)}; valid: list "
                f"the value of each of the {self.num_classes} classes in data.mask_values, or loss.ignore_label="
                f"{first} for a void value"
            )
        labels = f"{self.label_offset}..{self.num_classes - 1 + self.label_offset}"
        hint = f"data.mask_values={found}" if len(found) == self.num_classes else "data.mask_values=[...]"
        return (
            f"{path}: mask {kind} {found}; label {first} out of range, valid labels are {labels}; valid: {hint} "
            f"(the mask value of each class, e.g. [0,255] for a 0/255 binary mask), loss.ignore_label="
            f"{first - self.label_offset} "
            "for a void value, or data.class_colors for colour-coded masks"
        )


class PairDecoder:
    """Decodes one (image, mask) pair: checked, the mask read by its MaskReader, both brought to image_size."""

    def __init__(self, masks: MaskReader, image_size, image: ImageReader | None = None, fit="stretch", centre=True):
        self.masks, self.image_size, self.image = masks, image_size, image or ImageReader()
        self.fit, self.centre = fit, centre

    def __call__(self, path: Path, mask_path: Path) -> tuple[np.ndarray, np.ndarray]:
        if not Path(mask_path).is_file():
            raise DataError(f"{mask_path}: mask missing for image {path}")
        image, labels = self.image(path), self.masks(mask_path)
        if image.size != labels.shape[::-1]:
            height, width = labels.shape
            raise DataError(f"{mask_path}: mask is {width}x{height} but its image is {image.size[0]}x{image.size[1]}")
        image, mask = fit_image(image, self.image_size, self.fit, self.centre, Image.fromarray(labels))
        array = np.asarray(image, dtype=np.uint8)
        return array.reshape(*array.shape[:2], -1), np.asarray(mask, dtype=np.uint8)


class ImageDecoder:
    """Decodes one image file of a classification set into (image, its label), brought to image_size."""

    def __init__(self, image_size, image: ImageReader | None = None, fit="stretch", centre=True):
        self.image_size, self.image, self.fit, self.centre = image_size, image or ImageReader(), fit, centre

    def __call__(self, path: Path, label) -> tuple[np.ndarray, np.ndarray]:
        image, _ = fit_image(self.image(path), self.image_size, self.fit, self.centre)
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
    """An (H, W, C) uint8 image resized (bilinear, Pillow) to shape = (height, width), keeping its channel axis;
    float values (H, W, C) are resized bilinearly as floats (Keras), never rounded."""
    height, width = shape
    if image.shape[:2] == (height, width):
        return image
    if image.dtype != np.uint8:
        import keras

        resized = keras.ops.image.resize(image.astype(np.float32)[None], (height, width), interpolation="bilinear")
        return keras.ops.convert_to_numpy(resized)[0]
    resized = np.asarray(
        Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image).resize((width, height), Image.BILINEAR)
    )
    return resized.reshape(height, width, image.shape[-1])


def outputs_at_size(predict, image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Per-pixel outputs (H, W, C) for an (H, W, C) image of any size from `predict` (a batch at the model's
    (height, width) `shape` -> its outputs): the image resized to the model's size (`resize_image`), its
    outputs resized back to the image's own size (bilinear)."""
    import keras

    outputs = predict(resize_image(image, shape)[None].astype(np.float32))
    if outputs.shape[1:3] == image.shape[:2]:
        return outputs[0]
    resized = keras.ops.image.resize(outputs, image.shape[:2], interpolation="bilinear")
    return keras.ops.convert_to_numpy(resized)[0]


def read_images(paths: list[Path], channels: int, intensity: Intensity = AUTO) -> list[np.ndarray]:
    """Each file as an (H, W, channels) uint8 array at its own size: grey (L) for 1 channel, else RGB, its
    values mapped by `intensity` (the training run's data.intensity)."""
    reader = ImageReader(channels, "convert", intensity)
    images = []
    for path in paths:
        image = np.asarray(reader(path))
        images.append(image.reshape(*image.shape[:2], channels))
    return images


def resolve_channels(channels, paths: list[Path]) -> int:
    """data.channels: 1 or 3 as given; `auto` is 1 when every image file is grey (read from their headers),
    else 3."""
    if channels in (1, 3):
        return channels
    if channels != "auto":
        raise ConfigError(f"data.channels={channels!r} is invalid; valid: 1, 3, auto")
    kinds = count_kinds(paths)
    grey = all(kind.endswith("grey") for kind in kinds if kind != "unreadable")
    channels = 1 if grey and kinds else 3
    log.info("data.channels=auto: %d (%s)", channels, ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items())))
    return channels
