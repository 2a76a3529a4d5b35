"""Augmentation from config moves masks with images and leaves masks out of photometric changes."""

import albumentations as A
import numpy as np
import pytest

from pipeline.config import group_options
from pipeline.data.augment import build_augmentation
from pipeline.data.sequence import ImageBatches
from pipeline.errors import ConfigError


def paired_sample(seed=0):
    """An image whose red channel is 200 exactly where the mask is 1: alignment is checkable pixel by pixel."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((32, 32), np.uint8)
    mask[4:12, 6:25] = 1
    mask[20:30, 2:9] = 2
    image = rng.integers(0, 100, (32, 32, 3), dtype=np.uint8)
    image[..., 0] = np.where(mask > 0, 200, 0)
    return image, mask


def test_geometric_transforms_move_image_and_mask_together():
    augment = build_augmentation(
        [{"name": "HorizontalFlip", "p": 1.0}, {"name": "Transpose", "p": 1.0}, {"name": "RandomRotate90", "p": 0.5}],
        seed=3,
    )
    image, mask = paired_sample()
    moved = 0
    for _ in range(8):
        out = augment(image=image, mask=mask)
        moved += not np.array_equal(out["mask"], mask)
        np.testing.assert_array_equal(out["image"][..., 0] == 200, out["mask"] > 0)
        assert sorted(np.unique(out["mask"])) == [0, 1, 2]
    assert moved >= 4


def test_photometric_transforms_leave_the_mask_alone():
    augment = build_augmentation([{"name": "RandomBrightnessContrast", "brightness_limit": 0.5, "p": 1.0}], seed=1)
    image, mask = paired_sample()
    out = augment(image=image, mask=mask)
    assert not np.array_equal(out["image"], image)
    np.testing.assert_array_equal(out["mask"], mask)


AUGMENTS = group_options("augment")


@pytest.mark.parametrize("choice", AUGMENTS)
def test_every_augment_config_builds(compose_config, choice):
    cfg = compose_config([f"augment={choice}"])
    built = build_augmentation(cfg.augment.train)
    assert (len(built.transforms) if built else 0) == len(cfg.augment.train)
    assert build_augmentation([]) is None


def test_the_geometric_augmentation_is_the_default_s_geometric_transforms_alone(compose_config):
    """albumentations' own split: a DualTransform moves the mask with the image, an ImageOnlyTransform is
    photometric. augment=geometric keeps the default's first kind, with their settings, and none of the second."""
    default = build_augmentation(compose_config().augment.train).transforms
    geometric = build_augmentation(compose_config(["augment=geometric"]).augment.train).transforms
    assert any(isinstance(t, A.ImageOnlyTransform) for t in default)
    assert [repr(t) for t in geometric] == [repr(t) for t in default if isinstance(t, A.DualTransform)]


def test_on_grey_images_the_colour_shifts_are_zeroed_and_logged_and_the_value_shift_still_acts(caplog):
    """albumentations skips HueSaturationValue's hue and saturation on a 1-channel image, warning at every image:
    the pipeline sets them to 0 up front and says so once, and the value shift adds its constant (worked by hand)."""
    import logging
    import warnings

    spec = [{"name": "HueSaturationValue", "hue_shift_limit": 10, "sat_shift_limit": 20, "val_shift_limit": [10, 10],
             "p": 1.0}]  # fmt: skip
    image = (np.arange(64, dtype=np.uint8) * 3).reshape(8, 8, 1)
    with caplog.at_level(logging.INFO, "pipeline.data.augment"), warnings.catch_warnings():
        warnings.simplefilter("error")  # albumentations' per-image warning would fail here
        grey = build_augmentation(spec, seed=0, channels=1)(image=image)["image"]
    assert np.array_equal(grey.astype(int), np.minimum(image.astype(int) + 10, 255))
    [line] = [r.getMessage() for r in caplog.records]
    assert "augment.train[0] (HueSaturationValue): the images are grey" in line
    assert "hue_shift_limit=10 and sat_shift_limit=20 do not apply: set to 0" in line
    colour = build_augmentation(spec, seed=0, channels=3).transforms[0]
    assert colour.hue_shift_limit == (-10, 10) and colour.sat_shift_limit == (-20, 20)  # RGB keeps them


def test_bad_transform_names_the_entry():
    with pytest.raises(ConfigError, match=r"augment.train\[1\].name='Flip90'"):
        build_augmentation([{"name": "HorizontalFlip"}, {"name": "Flip90"}])
    with pytest.raises(ConfigError, match=r"augment.train\[0\] \(HorizontalFlip\): invalid arguments"):
        build_augmentation([{"name": "HorizontalFlip", "probability": 2}])


def test_batches_cover_every_sample_once_per_epoch_and_reshuffle():
    images = np.arange(10, dtype=np.uint8)[:, None, None, None] * np.ones((1, 4, 4, 3), np.uint8)
    masks = np.arange(10, dtype=np.uint8)[:, None, None] * np.ones((1, 4, 4), np.uint8)
    batches = ImageBatches(images, masks, batch_size=4, shuffle=True, seed=0)
    assert len(batches) == 3

    def epoch():
        seen = np.concatenate([batches[i][1][:, 0, 0] for i in range(len(batches))])
        xs = np.concatenate([batches[i][0][:, 0, 0, 0] for i in range(len(batches))])
        np.testing.assert_array_equal(seen, xs)  # images and masks stay paired
        return seen

    first = epoch()
    assert sorted(first) == list(range(10))
    batches.on_epoch_end()
    batches.on_epoch_begin()  # Keras calls both between epochs
    second = epoch()
    assert sorted(second) == list(range(10)) and not np.array_equal(second, first)
    # the order depends on (seed, epoch) only: a training resumed at epoch 1 gets the same batches
    resumed = ImageBatches(images, masks, batch_size=4, shuffle=True, seed=0, first_epoch=1)
    np.testing.assert_array_equal(np.concatenate([resumed[i][1][:, 0, 0] for i in range(3)]), second)
    x, y = batches[0]
    assert x.dtype == np.float32 and y.dtype == np.int32


def test_a_flipped_training_image_has_its_box_flipped_with_it():
    """Boxes (localization targets) move with their images; the reference is the object's own pixels."""
    image = np.zeros((32, 48, 3), np.uint8)
    image[4:10, 2:8] = 255  # the object: rows 4-9, columns 2-7
    box = np.array([2 / 48, 4 / 32, 8 / 48, 10 / 32], np.float32)  # x_min, y_min, x_max, y_max as fractions
    for transform in ("HorizontalFlip", "VerticalFlip", "Transpose"):
        augment = build_augmentation([{"name": transform, "p": 1.0}], seed=0, target="boxes")
        x, y = ImageBatches(image[None], box[None], batch_size=1, augment=augment, target="boxes")[0]
        rows, columns = np.nonzero(x[0, ..., 0])
        height, width = x.shape[1:3]
        found = np.array(
            [columns.min() / width, rows.min() / height, (columns.max() + 1) / width, (rows.max() + 1) / height]
        )
        np.testing.assert_allclose(y[0], found, atol=1e-6, err_msg=transform)
        assert not np.allclose(y[0], box) or transform == "Transpose" and height == width
    # without target="boxes" (the old ndim test) a (N, 4) target is a box too, never an image-only label
    assert ImageBatches(image[None], box[None], batch_size=1).target == "boxes"
