"""Classification sets: the handwritten digits bundled with scikit-learn (real data, offline).

Returned as images (N, H, W, C) uint8 and labels (N,) int, split reproducibly (stratified).
Each loader returns all three splits from one call (the generated glyphs are cached: callers must not
modify their arrays). A user's image folder is an index of files, decoded when read (pipeline.data.samples).
"""

import functools

import numpy as np
from PIL import Image

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
    from sklearn.model_selection import train_test_split

    if not (0 < test_fraction < 1 and 0 < val_fraction < 1 and val_fraction + test_fraction < 1):
        raise ConfigError(
            f"data.val_fraction={val_fraction}, data.test_fraction={test_fraction}: each in (0, 1), sum < 1"
        )
    n = len(labels)
    n_test, n_val = max(1, round(test_fraction * n)), max(1, round(val_fraction * n))
    try:
        x_rest, x_test, y_rest, y_test = train_test_split(
            images, labels, test_size=n_test, stratify=labels, random_state=seed
        )
        x_train, x_val, y_train, y_val = train_test_split(
            x_rest, y_rest, test_size=n_val, stratify=y_rest, random_state=seed
        )
    except ValueError as err:  # e.g. a split smaller than the number of classes
        raise ConfigError(
            f"data.val_fraction={val_fraction}, data.test_fraction={test_fraction} on {n} images: {err}"
        ) from None
    return {"train": (x_train, y_train), "val": (x_val, y_val), "test": (x_test, y_test)}


def digits(image_size: int = 32, val_fraction: float = 0.1, test_fraction: float = 0.2, seed: int = 0):
    """scikit-learn's 1,797 8x8 digits (UCI, 16 grey levels), scaled to 0..255 and upsampled to image_size."""
    from sklearn.datasets import load_digits  # imported when used: the config schema reads this module

    bunch = load_digits()
    images = (bunch.images * (255.0 / 16.0)).round().astype(np.uint8)[..., None]
    return stratified_splits(resize_all(images, image_size), bunch.target, val_fraction, test_fraction, seed)


def image_folder(
    root,
    classes: list[str] | None,
    image_size: int,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    bad=None,
    grayscale: str = "error",
    fit: str = "stretch",
    channels: int | str = 3,
    intensity=None,
):
    """The ImageNet/Keras convention root/<class name>/*.png|jpg|tif as three splits (stratified, fixed by seed)
    of file indexes: each image is decoded when read. classes=None takes the sub-folder names in sorted
    order; otherwise exactly those folders. Non-image files are bad files (raised, or skipped into `bad`).
    channels: 1, 3 or auto (1 when every file is grey); intensity: the data.intensity mapping (pixels.Intensity)."""
    from pathlib import Path

    from pipeline.data.folders import BadFiles, ImageDecoder, ImageReader, image_files, resolve_channels
    from pipeline.data.pixels import AUTO
    from pipeline.data.samples import FileSamples
    from pipeline.errors import DataError

    root, bad = Path(root), bad if bad is not None else BadFiles()
    if not root.is_dir():
        raise DataError(f"{root}: data.root folder not found (expected <root>/<class name>/*.png|jpg)")
    names = list(classes) if classes else sorted(p.name for p in root.iterdir() if p.is_dir())
    items = []
    for label, name in enumerate(names):
        folder = root / str(name)
        if not folder.is_dir():
            raise DataError(f"{folder}: no images for class '{name}': folder not found (data.classes lists it)")
        files = image_files(folder, bad)
        if not files:
            raise DataError(f"{folder}: no images for class '{name}' (bad files skipped: {len(bad.skipped)})")
        items += [(path, label) for path in files]
    labels = np.array([label for _, label in items])
    splits = stratified_splits(np.arange(len(items)), labels, val_fraction, test_fraction, seed)
    reader = ImageReader(resolve_channels(channels, [path for path, _ in items]), grayscale, intensity or AUTO)
    shape = (image_size, image_size, reader.channels)
    out = {}
    for split, (indices, _) in splits.items():
        decode = ImageDecoder(image_size, reader, fit, centre=split != "train")
        crop = image_size if fit == "crop" and split == "train" else None
        out[split] = FileSamples([items[i] for i in indices], decode, shape, "label", crop)
    return out


IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path) -> np.ndarray:
    """An array from LeCun's IDX format (MNIST's files), gzipped or not: magic 0x0000TTDD, D big-endian sizes."""
    import gzip
    from pathlib import Path

    from pipeline.errors import DataError

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: IDX file not found (put MNIST's train-images-idx3-ubyte etc. under data.root)")
    raw = (gzip.open if path.suffix == ".gz" else open)(path, "rb").read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_TYPES:
        raise DataError(f"{path}: not an IDX file (bad magic number)")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(IDX_TYPES[raw[2]])
    expected = 4 + 4 * ndim + dtype.itemsize * int(np.prod(shape))
    if len(raw) != expected:
        raise DataError(f"{path}: truncated or padded IDX file ({len(raw)} bytes, header says {expected})")
    return np.frombuffer(raw, dtype=dtype, offset=4 + 4 * ndim).reshape(shape)


def mnist(root, image_size: int = 32, val_fraction: float = 0.1, seed: int = 0):
    """MNIST from its four standard IDX files under root (as downloaded, .gz or not); test = the t10k files.

    28x28 digits are zero-padded to 32x32 as LeNet-5 was fed (LeCun et al. 1998); other sizes are resized.
    """
    from pathlib import Path

    root = Path(root)

    def find(stem):
        plain = root / stem
        return plain if plain.is_file() or not (root / f"{stem}.gz").is_file() else root / f"{stem}.gz"

    splits = {}
    for prefix, split in (("train", "train"), ("t10k", "test")):
        images = read_idx(find(f"{prefix}-images-idx3-ubyte")).astype(np.uint8)[..., None]
        labels = read_idx(find(f"{prefix}-labels-idx1-ubyte")).astype(np.int64)
        if len(images) != len(labels):
            raise ValueError(f"{root}: {prefix} has {len(images)} images but {len(labels)} labels")
        extra = image_size - images.shape[1]
        if extra > 0 and extra % 2 == 0:
            images = np.pad(images, ((0, 0), (extra // 2, extra // 2), (extra // 2, extra // 2), (0, 0)))
        splits[split] = (resize_all(images, image_size), labels)
    x, y = splits["train"]
    try:
        from sklearn.model_selection import train_test_split

        x_train, x_val, y_train, y_val = train_test_split(x, y, test_size=val_fraction, stratify=y, random_state=seed)
    except ValueError as err:
        raise ConfigError(f"data.val_fraction={val_fraction} on {len(y)} MNIST training images: {err}") from None
    return {"train": (x_train, y_train), "val": (x_val, y_val), "test": splits["test"]}


def select_classes(images: np.ndarray, labels: np.ndarray, keep: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Only the images whose label is in `keep`, relabelled 0..len(keep)-1 in `keep`'s order
    (digits 5-9 become classes 0-4: a target task with classes the source never saw)."""
    missing = sorted(set(keep) - set(np.unique(labels).tolist()))
    if missing:
        raise ConfigError(f"data.classes={keep} names labels {missing} that the set does not have")
    chosen = np.isin(labels, keep)
    relabel = {label: i for i, label in enumerate(keep)}
    return images[chosen], np.array([relabel[label] for label in labels[chosen]], dtype=labels.dtype)


def per_class_indices(labels: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Indices of at most k images of each class, drawn reproducibly by `seed` (the small target set of
    transfer learning), in the split's order: only its size changes."""
    rng = np.random.default_rng(seed)
    picked = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:k] for c in np.unique(labels)])
    picked.sort()
    return picked


def shapes_labels(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Class and bounding box (x_min, y_min, x_max, y_max, in pixels, inclusive) of the one object in each mask."""
    labels, boxes = [], []
    for mask in masks:
        ys, xs = np.nonzero(mask)
        labels.append(int(np.bincount(mask[ys, xs]).argmax()) - 1 if len(ys) else -1)
        boxes.append((xs.min(), ys.min(), xs.max(), ys.max()) if len(ys) else (0, 0, 0, 0))
    return np.array(labels), np.array(boxes)


GLYPH_FONTS = (  # matplotlib's bundled fonts: every machine with the pipeline has them
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSans-Oblique.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSansMono-Bold.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSerif-Italic.ttf",
    "STIXGeneral.ttf",
    "STIXGeneralBol.ttf",
    "STIXGeneralItalic.ttf",
    "cmr10.ttf",
    "cmss10.ttf",
    "cmtt10.ttf",
)


def glyphs(
    characters: list[str],
    image_size: int = 32,
    per_class: int = 300,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
):
    """See _glyphs; characters may be any sequence (made hashable for the cache)."""
    return _glyphs(tuple(str(c) for c in characters), image_size, per_class, seed, val_fraction, test_fraction)


@functools.lru_cache(maxsize=4)
def _glyphs(characters: tuple[str, ...], image_size, per_class, seed, val_fraction, test_fraction):
    """A generated character set, as large as asked and offline: each character in a random font of
    14, size, rotation, position, stroke and background, plus noise (an Omniglot-like task: the
    letters are a large source set, the digits a small target set of new classes)."""
    from pathlib import Path

    import matplotlib
    from PIL import ImageDraw, ImageFilter, ImageFont

    font_dir = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    rng = np.random.default_rng(seed)
    big = 2 * image_size  # drawn at twice the size, then downsampled: smooth edges
    images, labels = [], []
    for label, char in enumerate(characters):
        for _ in range(per_class):
            size = int(big * rng.uniform(0.45, 0.8))
            font = ImageFont.truetype(str(font_dir / GLYPH_FONTS[rng.integers(len(GLYPH_FONTS))]), size)
            background, ink = (rng.uniform(0, 90), rng.uniform(160, 255))
            if rng.random() < 0.5:  # dark on light as often as light on dark
                background, ink = 255 - background, 255 - ink
            canvas = Image.new("L", (big, big), int(background))
            glyph = Image.new("L", (big, big), 0)
            draw = ImageDraw.Draw(glyph)
            draw.text((big / 2, big / 2), char, fill=255, font=font, anchor="mm", stroke_width=int(rng.integers(0, 3)))
            glyph = glyph.rotate(rng.uniform(-20, 20), resample=Image.BILINEAR)
            shift = rng.uniform(-0.15, 0.15, 2) * big
            glyph = glyph.transform(glyph.size, Image.AFFINE, (1, 0, -shift[0], 0, 1, -shift[1]), Image.BILINEAR)
            canvas.paste(Image.new("L", (big, big), int(ink)), mask=glyph.filter(ImageFilter.GaussianBlur(0.5)))
            image = np.asarray(canvas.resize((image_size, image_size), Image.BILINEAR), dtype=np.float32)
            image += rng.normal(0, rng.uniform(0, 20), image.shape)
            images.append(np.clip(image, 0, 255).astype(np.uint8)[..., None])
            labels.append(label)
    return stratified_splits(np.stack(images), np.array(labels), val_fraction, test_fraction, seed)
