"""The Oxford-IIIT Pet dataset as distributed (Parkhi et al. 2012), read in place with no conversion:

    <root>/images/<name>.jpg
    <root>/annotations/trimaps/<name>.png      1 = pet, 2 = background, 3 = border (unclassified)
    <root>/annotations/trainval.txt, test.txt  lines "<name> <class id> <species> <breed id>"

Labels become 0 = pet, 1 = background, 2 = border. The validation split is a reproducible
fraction of trainval.
"""

from pathlib import Path

import numpy as np

from pipeline.errors import DataError

CLASSES = ("pet", "background", "border")
LABEL_OFFSET = 1


def _names(list_file: Path) -> list[str]:
    if not list_file.is_file():
        raise DataError(f"{list_file}: split list not found (expected the dataset's annotations/ folder)")
    names = [
        line.split()[0] for line in list_file.read_text().splitlines() if line.strip() and not line.startswith("#")
    ]
    if not names:
        raise DataError(f"{list_file}: no entries")
    return names


def pet_pairs(root: str | Path, split: str, val_fraction: float = 0.1, seed: int = 0) -> list[tuple[Path, Path]]:
    """(image, trimap) paths of `split` in train/val/test; val is carved from trainval with `seed`."""
    root = Path(root)
    if split == "test":
        names = _names(root / "annotations" / "test.txt")
    else:
        names = sorted(_names(root / "annotations" / "trainval.txt"))
        order = np.random.default_rng(seed).permutation(len(names))
        n_val = max(1, round(val_fraction * len(names)))
        picked = order[:n_val] if split == "val" else order[n_val:]
        names = [names[i] for i in sorted(picked)]
    pairs = []
    for name in names:
        image = root / "images" / f"{name}.jpg"
        if not image.is_file():
            raise DataError(f"{image}: image listed in the {split} split is missing")
        pairs.append((image, root / "annotations" / "trimaps" / f"{name}.png"))
    return pairs


ARCHIVES = ("images.tar.gz", "annotations.tar.gz")  # the two files the dataset is distributed as


def extract_archives(root: str | Path) -> None:
    """Unpack root/images.tar.gz and root/annotations.tar.gz into root when images/ or annotations/ is missing.

    Each archive is checked first: a member that would land outside root (`../`, an absolute path, a
    link pointing out) stops the extraction with a DataError naming it.
    """
    from pipeline.safety import safe_extract

    root = Path(root)
    for archive in ARCHIVES:
        target = root / archive.split(".")[0]
        if (root / archive).is_file() and not target.is_dir():
            safe_extract(root / archive, root)
