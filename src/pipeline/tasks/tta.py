"""Test-time augmentation: a model's outputs averaged over views of its input that the targets do not change
under, each view's output turned back first where the output is a map (a segmentation's probabilities).

`tta` (conf/config.yaml, one key for every stage that scores or predicts) names the views:
none; flips (the image, its left-right and its up-down mirror: 3 predictions); dihedral (the square's eight
symmetries, every quarter turn with and without a mirror: 8 predictions, square inputs only). Each costs that
many forward passes. The views must be symmetries of the task (shapes on a texture, cells, satellite tiles):
a digit turned a half turn is another digit, so they are the user's choice, never a default.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from pipeline.config.options import TTA_MODES
from pipeline.errors import ConfigError

# (quarter turns, mirrored): a view is np.rot90 by the turns, then a left-right mirror
VIEWS: dict[str, tuple[tuple[int, bool], ...]] = {
    "none": ((0, False),),
    "flips": ((0, False), (0, True), (2, True)),  # a half turn then a left-right mirror is the up-down mirror
    "dihedral": tuple((turns, mirrored) for turns in range(4) for mirrored in (False, True)),
}
STACKED_VALUES = 1 << 25  # input values (128 MB of float32) per call of `averaged`'s predict, its views stacked


def tta_mode(value) -> str:
    """The views' name; true and false (the key's older values) mean flips and none."""
    if value is None or value is False:
        return "none"
    if value is True:
        return "flips"
    if isinstance(value, str) and value in TTA_MODES:
        return value
    raise ConfigError(f"tta={value!r} is unknown; valid: {', '.join(TTA_MODES)} (true = flips, false = none)")


def view(images: np.ndarray, turns: int, mirrored: bool) -> np.ndarray:
    """(N, H, W, ...) images turned by quarter turns (counter-clockwise), then mirrored left-right."""
    turned = np.rot90(images, turns, axes=(1, 2))
    return turned[:, :, ::-1] if mirrored else turned


def unview(maps: np.ndarray, turns: int, mirrored: bool) -> np.ndarray:
    """The inverse of `view`: a map predicted on a view, back in the image's own frame."""
    unmirrored = maps[:, :, ::-1] if mirrored else maps
    return np.rot90(unmirrored, -turns, axes=(1, 2))


def check(tta, task, size: tuple | None = None) -> str:
    """The views' name, or one line before any work: a task whose targets move with the views (its
    `moves_with_views` says why: a box, a value) or, for dihedral, inputs that are not square."""
    mode = tta_mode(tta)
    why = getattr(task, "moves_with_views", None)
    if mode != "none" and why:
        raise ConfigError(f"tta={tta} averages over mirrored and turned views, but {why} ({task.name} task); "
                          "valid: tta=none")  # fmt: skip
    if size is not None and len(VIEWS[mode]) > 4 and size[0] != size[1]:
        raise ConfigError(f"tta=dihedral turns the images by quarter turns, which needs square inputs; the model "
                          f"takes {size[0]}x{size[1]}; valid: tta=flips or tta=none")  # fmt: skip
    return mode


def averaged(predict: Callable[[np.ndarray], np.ndarray], images: np.ndarray, tta, maps: bool) -> np.ndarray:
    """The mean of `predict` over the views `tta` names; with `maps`, each output (N, H, W, C) is turned back into
    the image's frame first, else the output (one vector per image) is taken as it is. The views of a batch go to
    `predict` stacked in one call (Keras' `predict` sets up each call anew, which eight calls of a small batch pay
    eight times); images are taken STACKED_VALUES input values at a time, so a large set (every tile of a big
    image) is not held eight times over at once."""
    views = VIEWS[check(tta, None, images.shape[1:3])]
    chunk = max(1, STACKED_VALUES // max(1, int(np.prod(images.shape[1:])) * len(views)))
    means = []
    for start in range(0, max(len(images), 1), chunk):
        batch = images[start : start + chunk]
        outputs = np.asarray(predict(np.concatenate([view(batch, *v) for v in views])), np.float32)
        outputs = outputs.reshape(len(views), len(batch), *outputs.shape[1:])
        total = outputs[0] if not maps else unview(outputs[0], *views[0])
        for output, turned in zip(outputs[1:], views[1:]):
            total = total + (unview(output, *turned) if maps else output)
        means.append(total / len(views) if len(views) > 1 else total)
    return means[0] if len(means) == 1 else np.concatenate(means)
