"""Data prep stage: generate the synthetic shapes set (or check a user's folder) described by conf/data.

python -m pipeline.prepare                      # data/shapes, skipped when already current
python -m pipeline.prepare data.splits.train=5000 data.generator.seed=1
"""

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from pipeline.config import conf_dir, stage
from pipeline.data.shapes import CLASSES, ShapesSpec, generate
from pipeline.errors import ConfigError, DataError

log = logging.getLogger(__name__)


def prepare_data(data: DictConfig, progress: bool = True) -> Path:
    """Make sure the dataset `data` describes is on disk; returns its root folder."""
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


@hydra.main(version_base="1.3", config_path=conf_dir(), config_name="config")
@stage
def main(cfg: DictConfig) -> None:
    prepare_data(cfg.data)


if __name__ == "__main__":
    main()
