"""Classification data: MNIST's IDX files, class-folder trees, and the shapes set as one-object images."""

import gzip

import numpy as np
import pytest
from PIL import Image

from helpers import run_here
from pipeline.data.classification import _glyphs, image_folder, mnist, read_idx
from pipeline.data.samples import decode_all
from pipeline.data.sources import load_data, prepare_data
from pipeline.errors import DataError


def write_idx(path, array: np.ndarray, gz: bool = False):
    """IDX as LeCun documents it: two zero bytes, a type byte (0x08 = unsigned byte), ndim, big-endian sizes."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    (gzip.open if gz else open)(path, "wb").write(payload)


def write_mnist(root, n_train=40, n_test=10):
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix, n, gz in (("train", n_train, True), ("t10k", n_test, False)):
        labels = np.arange(n) % 10
        images = rng.integers(0, 255, (n, 28, 28), dtype=np.uint8)
        suffix = ".gz" if gz else ""
        write_idx(root / f"{prefix}-images-idx3-ubyte{suffix}", images, gz)
        write_idx(root / f"{prefix}-labels-idx1-ubyte{suffix}", labels, gz)
    return images, labels


def test_idx_round_trip_and_bad_files(tmp_path):
    array = np.random.default_rng(1).integers(0, 255, (3, 4, 5), dtype=np.uint8)
    write_idx(tmp_path / "a.idx", array)
    np.testing.assert_array_equal(read_idx(tmp_path / "a.idx"), array)
    (tmp_path / "bad.idx").write_bytes(b"\x01\x02\x03\x04rest")
    with pytest.raises(DataError, match="bad.idx: not an IDX file"):
        read_idx(tmp_path / "bad.idx")
    (tmp_path / "short.idx").write_bytes((tmp_path / "a.idx").read_bytes()[:-7])
    with pytest.raises(DataError, match="short.idx: truncated or padded IDX file"):
        read_idx(tmp_path / "short.idx")


def test_mnist_pads_28_to_32_and_uses_t10k_as_test(tmp_path):
    test_images, test_labels = write_mnist(tmp_path / "mnist")
    splits = mnist(tmp_path / "mnist", image_size=32, val_fraction=0.25)
    assert [len(splits[s][1]) for s in ("train", "val", "test")] == [30, 10, 10]
    x_test, y_test = splits["test"]
    assert x_test.shape == (10, 32, 32, 1)
    np.testing.assert_array_equal(x_test[:, 2:30, 2:30, 0], test_images)  # centred, LeCun's 2-px border
    assert x_test[:, :2].max() == 0 and np.array_equal(y_test, test_labels)


def test_image_folder_splits_stratified(tmp_path):
    rng = np.random.default_rng(2)
    for name in ("cat", "dog", "owl"):
        (tmp_path / name).mkdir()
        for i in range(10):
            Image.fromarray(rng.integers(0, 255, (20 + i, 24, 3), dtype=np.uint8)).save(tmp_path / name / f"{i}.png")
    indexed = image_folder(tmp_path, None, 16, val_fraction=0.2, test_fraction=0.3, seed=0)
    splits = {split: decode_all(samples).arrays() for split, samples in indexed.items()}
    assert [len(splits[s][1]) for s in ("train", "val", "test")] == [15, 6, 9]
    assert np.bincount(splits["test"][1]).tolist() == [3, 3, 3]
    assert splits["train"][0].shape[1:] == (16, 16, 3)
    with pytest.raises(DataError, match="no images for class 'emu'"):
        image_folder(tmp_path, ["cat", "emu"], 16, 0.2, 0.3, 0)


def test_shapes_cls_holds_one_object_per_image(tmp_path, compose_config):
    cfg = compose_config(
        ["data=shapes_cls", f"paths.root={tmp_path}", "data.splits.train=30", "data.splits.val=6", "data.splits.test=6"]
    )
    root = prepare_data(cfg.data, progress=False)
    images, labels = load_data(cfg.data, root, "train")
    assert images.shape == (30, 64, 64, 3) and set(labels) <= {0, 1, 2} and len(set(labels)) == 3
    masks = np.stack([np.asarray(Image.open(p)) for p in sorted((root / "train" / "masks").glob("*.png"))])
    assert all(len(np.unique(m)) == 2 for m in masks)  # background and exactly one shape
    np.testing.assert_array_equal(labels, masks.max(axis=(1, 2)) - 1)


def test_train_stage_on_mnist_idx_files(project):
    write_mnist(project / "data" / "mnist", n_train=60, n_test=20)
    result = run_here(
        "train",
        project,
        "data=mnist",
        "model=lenet5",
        "trainer.epochs=1",
        "trainer.verbose=0",
        "data.val_fraction=0.25",
    )
    assert result.returncode == 0, result.stderr[-3000:]


def test_a_class_subset_and_k_per_class_shrink_only_the_training_split(compose_config):
    full = compose_config(["data=digits"]).data
    target = compose_config(["data=digits", "data.classes=[5,6,7,8,9]", "data.k_per_class=3"]).data
    x_test, y_test = load_data(full, prepare_data(full), "test")
    t_test, ty_test = load_data(target, prepare_data(target), "test")
    np.testing.assert_array_equal(t_test, x_test[y_test >= 5])  # the same test images, whatever k
    np.testing.assert_array_equal(ty_test, y_test[y_test >= 5] - 5)  # 5..9 relabelled 0..4
    _, y_train = load_data(target, prepare_data(target), "train")
    assert np.bincount(y_train).tolist() == [3] * 5


def test_glyphs_are_generated_reproducibly_with_the_asked_classes(compose_config):
    data = compose_config(["data=glyphs", "data.classes=['0','1','2']", "data.per_class=10"]).data
    x1, y1 = load_data(data, prepare_data(data), "train")
    _glyphs.cache_clear()  # draw them again
    x2, _ = load_data(data, prepare_data(data), "train")
    assert x1.shape[1:] == (32, 32, 1) and sorted(set(y1.tolist())) == [0, 1, 2]
    assert x1.std() > 20  # glyphs, not blank canvases
    np.testing.assert_array_equal(x1, x2)


def test_the_debug_caps_apply_to_every_source(compose_config):
    """trainer=debug logs data.splits 16/8/8 as params: a bundled or a user's set is cut to them too."""
    cfg = compose_config(["data=digits", "trainer=debug"])
    sizes = {split: len(load_data(cfg.data, prepare_data(cfg.data), split)[0]) for split in ("train", "val", "test")}
    assert sizes == {"train": 16, "val": 8, "test": 8}
    full = compose_config(["data=digits"])
    assert len(load_data(full.data, prepare_data(full.data), "test")[0]) == 359  # 20 % of 1,797, stratified
