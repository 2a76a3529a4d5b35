"""The folder loader reads user data in the images/ + masks/ layout and names the file at fault."""

import numpy as np
import pytest
from PIL import Image

from pipeline.data.folders import load_split
from pipeline.errors import DataError


def write_pair(root, split, stem, size=(20, 16), label=1, suffix=".png"):
    (root / split / "images").mkdir(parents=True, exist_ok=True)
    (root / split / "masks").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(stem))
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(
        root / split / "images" / f"{stem}{suffix}"
    )
    mask = np.zeros((size[1], size[0]), np.uint8)
    mask[2:6, 3:9] = label
    Image.fromarray(mask).save(root / split / "masks" / f"{stem}.png")
    return mask


def test_reads_user_folder_sorted_and_resized(tmp_path):
    m_b = write_pair(tmp_path, "train", "b")
    write_pair(tmp_path, "train", "a", suffix=".jpg")
    images, masks = load_split(tmp_path, "train", num_classes=2)
    assert images.shape == (2, 16, 20, 3) and masks.shape == (2, 16, 20)
    np.testing.assert_array_equal(masks[1], m_b)  # sorted by name: a.jpg, b.png
    images, masks = load_split(tmp_path, "train", num_classes=2, image_size=8)
    assert images.shape == (2, 8, 8, 3) and set(np.unique(masks)) <= {0, 1}


def test_grayscale_images_are_refused_or_become_rgb(tmp_path):
    write_pair(tmp_path, "train", "a")
    path = tmp_path / "train" / "images" / "a.png"
    Image.open(path).convert("L").save(path)
    with pytest.raises(DataError, match=r"images/a.png: grayscale image \(mode L\) where RGB is expected"):
        load_split(tmp_path, "train", 2)
    assert load_split(tmp_path, "train", 2, grayscale="convert")[0].shape[-1] == 3


@pytest.mark.parametrize(
    ("breakage", "culprit", "message"),
    [
        ("missing_mask", "masks/a.png", "mask missing"),
        ("size_mismatch", "masks/a.png", "mask is 5x5 but its image is 20x16"),
        ("label_out_of_range", "masks/a.png", "label 7 out of range, valid labels are 0..1"),
        ("corrupt_image", "images/a.png", "not a readable image"),
        ("truncated_image", "images/a.png", "not a readable image"),
        ("empty_split", "train/images", "no images"),
        ("missing_folder", "train/masks", "folder not found"),
    ],
)
def test_bad_data_names_the_file(tmp_path, breakage, culprit, message):
    write_pair(tmp_path, "train", "a")
    image, mask = tmp_path / "train" / "images" / "a.png", tmp_path / "train" / "masks" / "a.png"
    if breakage == "missing_mask":
        mask.unlink()
    elif breakage == "size_mismatch":
        Image.fromarray(np.zeros((5, 5), np.uint8)).save(mask)
    elif breakage == "label_out_of_range":
        Image.fromarray(np.full((16, 20), 7, np.uint8)).save(mask)
    elif breakage == "corrupt_image":
        image.write_bytes(b"this is not a png")
    elif breakage == "truncated_image":
        image.write_bytes(image.read_bytes()[:60])
    elif breakage == "empty_split":
        image.unlink()
    elif breakage == "missing_folder":
        mask.unlink()
        mask.parent.rmdir()
    with pytest.raises(DataError) as caught:
        load_split(tmp_path, "train", num_classes=2)
    assert culprit in str(caught.value) and message in str(caught.value)
