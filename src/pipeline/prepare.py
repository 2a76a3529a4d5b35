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
from pipeline.data.classification import digits
from pipeline.data.folders import load_pairs, load_split
from pipeline.data.oxford_pets import pet_pairs
from pipeline.data.shapes import CLASSES, ShapesSpec, generate
from pipeline.errors import ConfigError, DataError

log = logging.getLogger(__name__)
BUNDLED = ("digits",)


def prepare_data(data: DictConfig, progress: bool = True) -> Path:
    """Make sure the dataset `data` describes is on disk; returns its root folder."""
    if data.get("layout") in BUNDLED:
        return Path(".")  # shipped with a library: nothing to prepare or read from disk
    root = Path(data.root)
    if data.get("generator") is None:
        if not root.is_dir():
            raise DataError(f"{root}: data.root folder not found (expected {root}/<split>/images and masks)")
        return root
    if list(data.classes) != list(CLASSES):
        raise ConfigError(f"data.classes={list(data.classes)} is invalid: the shapes generator draws {list(CLASSES)}")
    generator = OmegaConf.to_container(data.generator)
    counts = tuple((split, count) for split, count in data.splits.items())
    try:
        spec = ShapesSpec(image_size=data.image_size, counts=counts, **generator)
    except TypeError as err:
        raise ConfigError(f"data.generator: {err}; valid keys: {', '.join(ShapesSpec.__dataclass_fields__)}") from None
    manifest = generate(root, spec, progress=progress)
    log.info("dataset %s at %s: %s, %s", data.name, root, manifest["counts"], manifest["checksum"][:19])
    return root


def load_data(data: DictConfig, root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, H, W, C) uint8 and targets of one split, by the data config's layout: masks (N, H, W)
    uint8 for segmentation sets, class labels (N,) for classification sets."""
    num_classes, size = len(data.classes), data.image_size
    layout = data.get("layout", "folders")
    if layout == "digits":
        return digits(size, data.val_fraction, data.test_fraction, data.split_seed)[split]
    if layout == "folders":
        return load_split(root, split, num_classes, size)
    if layout == "oxford_pets":
        pairs = pet_pairs(root, split, data.val_fraction, data.split_seed)
        return load_pairs(pairs, num_classes, size, label_offset=oxford_pets.LABEL_OFFSET)
    raise ConfigError(f"data.layout={layout!r} is unknown; valid: folders, oxford_pets, digits")


@hydra.main(version_base="1.3", config_path=conf_dir(), config_name="config")
@stage
def main(cfg: DictConfig) -> None:
    prepare_data(cfg.data)


if __name__ == "__main__":
    main()
