"""The benchmark's data sets: generated shapes images hard-linked under new names (each file is still read and
decoded on its own; only the disk is spared), and the overrides that read them as a user's folder."""

import os
from pathlib import Path


def linked_set(root: Path, size: int, distinct: int, train: int, held_out: int = 16) -> Path:
    """A segmentation folder set of `train` training images at size x size, made of `distinct` generated shapes
    images hard-linked under new names (every file is read and decoded on its own; only the disk is spared),
    plus `held_out` val and test images (linked the same way). Built once per (size, distinct, train, held_out)
    under root."""
    from pipeline.data.shapes import ShapesSpec, generate

    out = root / f"linked{size}-{distinct}-{train}" / f"held-out-{held_out}"
    if (out / "train" / "images").is_dir() and len(list((out / "train" / "images").iterdir())) == train:
        return out
    held = min(held_out, distinct)  # generated; more are links to these
    source = root / f"shapes{size}-{distinct}-{held}"
    counts = (("train", distinct), ("val", held), ("test", held))
    spec = ShapesSpec(image_size=size, counts=counts, min_size=size // 10, max_size=size // 4)
    generate(source, spec, progress=False)
    for split in ("train", "val", "test"):
        for kind in ("images", "masks"):
            (out / split / kind).mkdir(parents=True, exist_ok=True)
            files = sorted((source / split / kind).iterdir())
            count = train if split == "train" else held_out
            for i in range(count):
                target = out / split / kind / f"{i:06d}.png"
                if not target.exists():
                    os.link(files[i % len(files)], target)
    return out


def linked_tree(root: Path, size: int, distinct: int, total: int, classes: int = 3) -> Path:
    """A classification tree root/<class>/*.png of `total` images at size x size: `distinct` generated shapes
    images hard-linked under new names (each file is still read and decoded on its own)."""
    out = root / f"tree{size}-{distinct}-{total}"
    if out.is_dir() and sum(1 for _ in out.rglob("*.png")) == total:
        return out
    source = linked_set(root, size, distinct, distinct) / "train" / "images"
    files = sorted(source.iterdir())
    for i in range(total):
        folder = out / f"class{i % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{i:06d}.png"
        if not target.exists():
            os.link(files[i % len(files)], target)
    return out


def tree_overrides(root: Path, size: int, train: int, *extra: str) -> tuple[str, ...]:
    """A linked tree read as a user's image folder, streamed, `train` training images, a cheap classifier
    (AlexNet's 11x11 stride-4 stem): the rows that use it measure the data pipeline, not the model."""
    return ("data=image_folder", f"data.root={root}", f"data.image_size={size}", "data.cache=none",
            "data.val_fraction=0.01", "data.test_fraction=0.01", f"data.splits.train={train}", "model=alexnet",
            "model.small_input=false", "tracking.experiment=bench", *extra)  # fmt: skip


def folder_overrides(root: Path, size: int, *extra: str, cache: str = "none") -> tuple[str, ...]:
    """A generated linked set read as a user's folder (data=folder), streamed by default (data.cache=none)."""
    return ("data=folder", f"data.root={root}", "data.classes=[background,circle,square,triangle]",
            f"data.image_size={size}", f"data.cache={cache}", "tracking.experiment=bench", *extra)  # fmt: skip
