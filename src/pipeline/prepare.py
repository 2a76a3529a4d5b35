"""Data prep stage: generate the synthetic shapes set (or check a user's folder) described by conf/data.

python -m pipeline.prepare                      # data/shapes, skipped when already current
python -m pipeline.prepare data.splits.train=5000 data.generator.seed=1
"""

import logging
from pathlib import Path

import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf

from pipeline.config import conf_dir, stage
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


def load_data(data: DictConfig, root: Path, split: str, bad: BadFiles | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, H, W, C) uint8 and targets of one split, by the data config's layout: masks (N, H, W)
    uint8 for segmentation sets, class labels (N,) for classification sets. Unusable files raise a DataError
    naming them, or are skipped and recorded in `bad` (data.on_bad_file=skip).

    data.k_per_class (classification sets) keeps at most k training images of each class; val and
    test stay whole, so runs with different k are scored on the same images."""
    images, targets = _load_split(data, root, split, bad)
    k = data.get("k_per_class")
    if k is not None and split == "train":
        if not (isinstance(k, int) and k >= 1) or data.get("task") != "classification":
            raise ConfigError(f"data.k_per_class={k!r} is invalid: must be null or a positive integer (classification)")
        images, targets = per_class_subsample(images, targets, k, data.get("k_seed", 0))
    return images, targets


def _load_split(data: DictConfig, root: Path, split: str, bad: BadFiles | None) -> tuple[np.ndarray, np.ndarray]:
    num_classes, size = len(data.classes or []), data.image_size
    layout, grayscale = data.get("layout", "folders"), data.get("grayscale", "error")
    if layout in ("digits", "mnist"):  # labels are the digits: data.classes may pick a subset (e.g. 5-9)
        if layout == "digits":
            images, labels = digits(size, data.val_fraction, data.test_fraction, data.split_seed)[split]
        else:
            images, labels = mnist(str(root), size, data.val_fraction, data.split_seed)[split]
        keep = [int(c) for c in data.classes]
        return (images, labels) if keep == list(range(10)) else select_classes(images, labels, keep)
    if layout == "glyphs":
        return glyphs(list(data.classes), size, data.per_class, data.split_seed, data.val_fraction, data.test_fraction)[
            split
        ]
    if layout == "image_folder":
        classes = [str(c) for c in data.classes] if data.classes else None
        splits = image_folder(
            root, classes, size, data.val_fraction, data.test_fraction, data.split_seed, bad, grayscale
        )
        return splits[split]
    if layout == "shapes_cls":  # the one object of each generated image: its class (circle, square, triangle)
        images, masks = load_split(root, split, len(CLASSES), size, bad, grayscale)
        labels, boxes = shapes_labels(masks)
        if data.task == "localization":  # (x_min, y_min, x_max, y_max) as fractions of the image size
            return images, ((boxes + np.array([0, 0, 1, 1])) / size).astype(np.float32)
        return images, labels
    if layout == "folders":
        return load_split(root, split, num_classes, size, bad, grayscale)
    if layout == "oxford_pets":
        pairs = pet_pairs(root, split, data.val_fraction, data.split_seed)
        return load_pairs(pairs, num_classes, size, oxford_pets.LABEL_OFFSET, bad, grayscale)
    raise ConfigError(
        f"data.layout={layout!r} is unknown; "
        "valid: folders, oxford_pets, digits, glyphs, image_folder, mnist, shapes_cls"
    )


def class_names(data: DictConfig, root: Path) -> list[str]:
    """The data's class names: from the config, or (image_folder with classes: null) its sorted sub-folders."""
    if data.classes:
        return [str(c) for c in data.classes]
    if data.get("layout") == "image_folder" and root.is_dir():
        return sorted(p.name for p in root.iterdir() if p.is_dir())
    raise ConfigError(f"data.classes is empty: list the class names for data={data.name}")


@hydra.main(version_base="1.3", config_path=conf_dir(), config_name="config")
@stage
def main(cfg: DictConfig) -> None:
    prepare_data(cfg.data)


if __name__ == "__main__":
    main()
