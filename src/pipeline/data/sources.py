"""Data sources: make a data config's set exist on disk, then read its splits, by `data.layout`.

One registry (READERS) maps each layout to its reader; a reader takes the data config, the set's root
and a split and returns (images (N, H, W, C) uint8, targets) with targets of the kind the data's task
learns (masks, labels or boxes). Library functions for the stages and notebooks alike.
"""

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from pipeline.data import oxford_pets
from pipeline.data.classification import (
    digits,
    glyphs,
    image_folder,
    mnist,
    per_class_subsample,
    select_classes,
    shapes_labels,
)
from pipeline.data.folders import BadFiles, load_pairs, load_split
from pipeline.data.oxford_pets import pet_pairs
from pipeline.data.shapes import CLASSES, ShapesSpec, generate
from pipeline.errors import ConfigError, DataError

log = logging.getLogger(__name__)
Split = tuple[np.ndarray, np.ndarray]


def _digit_subset(images: np.ndarray, labels: np.ndarray, data: DictConfig) -> Split:
    """Labels are the digits: data.classes may pick a subset (e.g. 5-9), relabelled 0..k-1."""
    keep = [int(c) for c in data.classes]
    return (images, labels) if keep == list(range(10)) else select_classes(images, labels, keep)


def _digits(data: DictConfig, root: Path, split: str, bad: BadFiles | None) -> Split:
    return _digit_subset(*digits(data.image_size, data.val_fraction, data.test_fraction, data.split_seed)[split], data)


def _mnist(data: DictConfig, root: Path, split: str, bad: BadFiles | None) -> Split:
    return _digit_subset(*mnist(str(root), data.image_size, data.val_fraction, data.split_seed)[split], data)


def _glyphs(data: DictConfig, root: Path, split: str, bad: BadFiles | None) -> Split:
    classes = list(data.classes)
    return glyphs(classes, data.image_size, data.per_class, data.split_seed, data.val_fraction, data.test_fraction)[
        split
    ]


def _image_folder(data: DictConfig, root: Path, split: str, bad: BadFiles | None) -> Split:
    classes = [str(c) for c in data.classes] if data.classes else None
    grayscale = data.get("grayscale", "error")
    return image_folder(
        root, classes, data.image_size, data.val_fraction, data.test_fraction, data.split_seed, bad, grayscale
    )[split]


def _shapes_cls(data: DictConfig, root: Path, split: str, bad: BadFiles | None) -> Split:
    """The one object of each generated image: its class (circle, square, triangle), or its box
    (x_min, y_min, x_max, y_max as fractions of the image size) when the task learns boxes."""
    from pipeline.tasks import get_task

    size = data.image_size
    images, masks = load_split(root, split, len(CLASSES), size, bad, data.get("grayscale", "error"))
    labels, boxes = shapes_labels(masks)
    if get_task(data.task).target == "boxes":
        return images, ((boxes + np.array([0, 0, 1, 1])) / size).astype(np.float32)
    return images, labels


def _folders(data: DictConfig, root: Path, split: str, bad: BadFiles | None) -> Split:
    return load_split(root, split, len(data.classes or []), data.image_size, bad, data.get("grayscale", "error"))


def _oxford_pets(data: DictConfig, root: Path, split: str, bad: BadFiles | None) -> Split:
    pairs = pet_pairs(root, split, data.val_fraction, data.split_seed)
    num_classes, grayscale = len(data.classes or []), data.get("grayscale", "error")
    return load_pairs(pairs, num_classes, data.image_size, oxford_pets.LABEL_OFFSET, bad, grayscale)


READERS: dict[str, Callable[[DictConfig, Path, str, BadFiles | None], Split]] = {
    "folders": _folders,
    "oxford_pets": _oxford_pets,
    "digits": _digits,
    "glyphs": _glyphs,
    "image_folder": _image_folder,
    "mnist": _mnist,
    "shapes_cls": _shapes_cls,
}
BUNDLED = ("digits", "glyphs")  # shipped with a library, or generated in memory


def prepare_data(data: DictConfig, progress: bool = True) -> Path:
    """Make sure the dataset `data` describes is on disk; returns its root folder."""
    if data.get("layout") in BUNDLED:
        return Path(".")  # shipped with a library: nothing to prepare or read from disk
    root = Path(data.root)
    if data.get("layout") == "oxford_pets":
        oxford_pets.extract_archives(root)  # the dataset's two tarballs, as downloaded, when not yet unpacked
    if data.get("generator") is None:
        if not root.is_dir():
            raise DataError(f"{root}: data.root folder not found (data={data.name}, layout {data.get('layout')})")
        return root
    expected = list(CLASSES[1:]) if data.get("layout") == "shapes_cls" else list(CLASSES)
    if list(data.classes) != expected:
        raise ConfigError(f"data.classes={list(data.classes)} is invalid: the shapes generator draws {expected}")
    generator = OmegaConf.to_container(data.generator)
    counts = tuple((split, count) for split, count in data.splits.items())
    try:
        spec = ShapesSpec(image_size=data.image_size, counts=counts, **generator)
    except TypeError as err:
        raise ConfigError(f"data.generator: {err}; valid keys: {', '.join(ShapesSpec.__dataclass_fields__)}") from None
    manifest = generate(root, spec, progress=progress)
    log.info("dataset %s at %s: %s, %s", data.name, root, manifest["counts"], manifest["checksum"][:19])
    return root


def load_data(data: DictConfig, root: Path, split: str, bad: BadFiles | None = None) -> Split:
    """Images (N, H, W, C) uint8 and targets of one split, read by the layout's reader: masks (N, H, W)
    uint8, class labels (N,) or boxes (N, 4). Unusable files raise a DataError naming them, or are
    skipped and recorded in `bad` (data.on_bad_file=skip).

    data.splits.<split> (when set) keeps the first N images of the split, for every layout (trainer=debug's
    caps); generated sets are generated at exactly that size. data.k_per_class (classification sets) keeps
    at most k training images of each class; val and test stay whole, so runs with different k are scored
    on the same images."""
    from pipeline.tasks import get_task

    layout = data.get("layout", "folders")
    if layout not in READERS:
        raise ConfigError(f"data.layout={layout!r} is unknown; valid: {', '.join(READERS)}")
    images, targets = READERS[layout](data, root, split, bad)
    cap = (data.get("splits") or {}).get(split)
    if cap is not None and len(images) > cap:  # trainer=debug's 16/8/8: every source, not only generated ones
        images, targets = images[:cap], targets[:cap]
    k = data.get("k_per_class")
    if k is not None and split == "train":
        if not (isinstance(k, int) and k >= 1) or get_task(data.get("task", "segmentation")).target != "label":
            raise ConfigError(f"data.k_per_class={k!r} is invalid: must be null or a positive integer (classification)")
        images, targets = per_class_subsample(images, targets, k, data.get("k_seed", 0))
    return images, targets


def load_splits(data: DictConfig, root: Path, bad: BadFiles | None = None) -> dict[str, Split]:
    """All three splits: {"train": (images, targets), "val": ..., "test": ...}."""
    return {split: load_data(data, root, split, bad) for split in ("train", "val", "test")}


def class_names(data: DictConfig, root: Path) -> list[str]:
    """The data's class names: from the config, or (image_folder with classes: null) its sorted sub-folders."""
    if data.classes:
        return [str(c) for c in data.classes]
    if data.get("layout") == "image_folder" and root.is_dir():
        return sorted(p.name for p in root.iterdir() if p.is_dir())
    raise ConfigError(f"data.classes is empty: list the class names for data={data.name}")
