"""The synthetic shapes set: deterministic, well-formed, and rebuilt exactly when its spec or files change."""

import json

import numpy as np
import pytest
from PIL import Image

from pipeline.data.shapes import CLASSES, ShapesSpec, generate, render_sample
from pipeline.errors import ConfigError

SMALL = ShapesSpec(image_size=32, counts=(("train", 6), ("val", 2), ("test", 2)), min_size=4, max_size=10)


def test_same_seed_same_sample_and_other_seed_differs():
    image, mask = render_sample(SMALL, "train", 3)
    again_image, again_mask = render_sample(SMALL, "train", 3)
    other_image, _ = render_sample(ShapesSpec(**{**SMALL.__dict__, "seed": 1}), "train", 3)
    np.testing.assert_array_equal(image, again_image)
    np.testing.assert_array_equal(mask, again_mask)
    assert not np.array_equal(image, other_image)
    assert not np.array_equal(image, render_sample(SMALL, "val", 3)[0])  # splits are independent streams


def test_masks_hold_every_class_and_shapes_stand_out_from_background():
    spec = ShapesSpec()
    samples = [render_sample(spec, "train", i) for i in range(40)]
    labels = np.concatenate([m.ravel() for _, m in samples])
    assert set(np.unique(labels)) == set(range(len(CLASSES)))
    for image, mask in samples:
        assert image.shape == (64, 64, 3) and image.dtype == np.uint8 and mask.shape == (64, 64)
        # a shape is visible: its pixels differ from the background's mean colour by a clear margin
        background_colour = image[mask == 0].mean(axis=0)
        for label in set(np.unique(mask)) - {0}:
            shape_colour = image[mask == label].mean(axis=0)
            assert np.abs(shape_colour - background_colour).sum() > 20


def test_generate_writes_layout_and_manifest(tmp_path):
    root = tmp_path / "shapes"
    manifest = generate(root, SMALL, progress=False)
    for split, count in SMALL.counts:
        assert len(list((root / split / "images").glob("*.png"))) == count
        assert len(list((root / split / "masks").glob("*.png"))) == count
    on_disk = json.loads((root / "manifest.json").read_text())
    assert on_disk == manifest
    assert on_disk["classes"] == list(CLASSES) and on_disk["counts"] == {"train": 6, "val": 2, "test": 2}
    assert on_disk["checksum"].startswith("sha256:") and on_disk["spec"]["seed"] == 0
    image = np.asarray(Image.open(root / "train" / "images" / "00000.png"))
    np.testing.assert_array_equal(image, render_sample(SMALL, "train", 0)[0])
    assert not list(tmp_path.glob(".shapes.tmp-*"))  # the temporary folder was moved into place


def test_generate_skips_when_current_and_rebuilds_when_spec_or_files_change(tmp_path):
    root = tmp_path / "shapes"
    generate(root, SMALL, progress=False)
    first = root / "train" / "images" / "00000.png"
    stamp = first.stat().st_mtime_ns
    generate(root, SMALL, progress=False)
    assert first.stat().st_mtime_ns == stamp  # skipped: nothing rewritten

    bigger = ShapesSpec(**{**SMALL.__dict__, "counts": (("train", 8), ("val", 2), ("test", 2))})
    assert generate(root, bigger, progress=False)["counts"]["train"] == 8
    assert len(list((root / "train" / "images").glob("*.png"))) == 8

    (root / "val" / "masks" / "00000.png").write_bytes(b"tampered")
    generate(root, bigger, progress=False)
    assert Image.open(root / "val" / "masks" / "00000.png").size == (32, 32)  # checksum caught it


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [("max_size", 40, "data.generator.max_size=40"), ("min_shapes", 0, "data.generator.min_shapes=0")],
)
def test_impossible_spec_names_the_key(field, value, expected):
    with pytest.raises(ConfigError, match=expected):
        ShapesSpec(**{**SMALL.__dict__, field: value})
