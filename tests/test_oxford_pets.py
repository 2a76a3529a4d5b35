"""The Oxford-IIIT Pet layout read in place, on a tiny copy the test writes in that exact layout."""

import numpy as np
import pytest
from PIL import Image

from helpers import run_here
from pipeline.data.sources import load_data
from pipeline.errors import DataError

NAMES = [
    "Abyssinian_1",
    "Abyssinian_2",
    "beagle_3",
    "beagle_4",
    "Bombay_5",
    "Bombay_6",
    "pug_7",
    "pug_8",
    "pug_9",
    "pug_10",
]


def write_pets(root, bad_label=False):
    (root / "images").mkdir(parents=True)
    (root / "annotations" / "trimaps").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i, name in enumerate(NAMES):
        h, w = 40 + i, 50 + 2 * i  # the real set's images differ in size
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / "images" / f"{name}.jpg")
        trimap = np.full((h, w), 2, np.uint8)  # 2 = background
        trimap[10:30, 10:30] = 1  # 1 = pet
        trimap[10:14, 10:30] = 3  # 3 = border
        if bad_label and i == 3:
            trimap[0, 0] = 4
        Image.fromarray(trimap).save(root / "annotations" / "trimaps" / f"{name}.png")
    lines = [f"{n} {i % 3 + 1} {1 + i % 2} {i}" for i, n in enumerate(NAMES)]
    (root / "annotations" / "trainval.txt").write_text("\n".join(lines[:7]) + "\n")
    (root / "annotations" / "test.txt").write_text("\n".join(lines[7:]) + "\n")


def test_splits_labels_and_sizes(tmp_path, compose_config):
    write_pets(tmp_path / "pets")
    cfg = compose_config(
        ["data=oxford_pets", f"data.root={tmp_path / 'pets'}", "data.image_size=32", "data.val_fraction=0.3"]
    )
    splits = {s: load_data(cfg.data, tmp_path / "pets", s) for s in ("train", "val", "test")}
    assert [len(splits[s][0]) for s in ("train", "val", "test")] == [5, 2, 3]
    images, masks = splits["test"]
    assert images.shape == (3, 32, 32, 3) and masks.shape == (3, 32, 32)
    assert set(np.unique(masks)) == {0, 1, 2}  # pet, background, border from trimap values 1, 2, 3
    again = load_data(cfg.data, tmp_path / "pets", "val")[1]
    np.testing.assert_array_equal(again, splits["val"][1])  # the val split is reproducible


def test_bad_trimap_label_names_the_file(tmp_path, compose_config):
    write_pets(tmp_path / "pets", bad_label=True)
    cfg = compose_config(
        ["data=oxford_pets", f"data.root={tmp_path / 'pets'}", "data.image_size=32", "data.val_fraction=0.3"]
    )
    with pytest.raises(
        DataError, match=r"beagle_4.png: mask values \[1, 2, 3, 4\]; label 4 out of range, valid labels are 1..3"
    ):
        for split in ("train", "val"):
            load_data(cfg.data, tmp_path / "pets", split)


def test_train_stage_runs_on_the_pets_layout(project):
    write_pets(project / "pets")
    result = run_here(
        "train",
        project,
        "data=oxford_pets",
        "trainer=debug",
        f"data.root={project / 'pets'}",
        "data.val_fraction=0.3",
        "loss=dice_ce",
        "loss.ignore_label=2",
    )
    assert result.returncode == 0, result.stderr[-3000:]
