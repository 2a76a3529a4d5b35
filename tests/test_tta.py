"""Test-time views (pipeline.tasks.tta) against hand-written symmetries of the square: index maps written
with transposes and flips, not with the rot90 the module uses."""

import numpy as np
import pytest

from pipeline.config.options import TTA_MODES
from pipeline.errors import ConfigError
from pipeline.tasks.tta import VIEWS, averaged, tta_mode, view

# the square's eight symmetries as (forward, inverse) on (N, H, W, C) arrays, written independently of rot90
T = lambda a: a.transpose(0, 2, 1, 3)  # noqa: E731
UD = lambda a: a[:, ::-1]  # noqa: E731
LR = lambda a: a[:, :, ::-1]  # noqa: E731
SYMMETRIES = [
    (lambda a: a, lambda a: a),
    (LR, LR),
    (UD, UD),
    (lambda a: UD(LR(a)), lambda a: UD(LR(a))),  # half turn
    (T, T),  # mirror in the main diagonal
    (lambda a: UD(LR(T(a))), lambda a: T(LR(UD(a)))),  # mirror in the other diagonal
    (lambda a: UD(T(a)), lambda a: T(UD(a))),  # a quarter turn one way
    (lambda a: LR(T(a)), lambda a: T(LR(a))),  # and the other
]


def test_the_views_are_the_configs_vocabulary():
    assert tuple(VIEWS) == TTA_MODES


def test_dihedral_views_are_the_eight_distinct_symmetries():
    image = np.arange(16.0).reshape(1, 4, 4, 1)
    seen = {view(image, turns, mirrored).tobytes() for turns, mirrored in VIEWS["dihedral"]}
    expected = {forward(image).tobytes() for forward, _ in SYMMETRIES}
    assert seen == expected and len(expected) == 8


def test_an_equivariant_model_is_unchanged_by_averaging_its_maps():
    """A per-pixel model commutes with every view: turned back, each view gives the same map, so the average
    is the single prediction (a wrong inverse would blur it)."""
    images = np.random.default_rng(0).random((3, 5, 5, 2)).astype(np.float32)
    model = lambda x: np.tanh(2 * x) - x**2  # noqa: E731
    for mode in TTA_MODES:
        np.testing.assert_allclose(averaged(model, images, mode, maps=True), model(images), atol=1e-6)


def test_a_position_dependent_model_averages_to_its_symmetrised_weights():
    """Model x * W: the dihedral average is x * (mean over g of g⁻¹(W) moved back), a hand-worked reference."""
    rng = np.random.default_rng(1)
    images = rng.random((2, 6, 6, 1)).astype(np.float32)
    weights = rng.random((1, 6, 6, 1)).astype(np.float32)
    model = lambda x: x * weights  # noqa: E731
    # view g, predict, turn back: g⁻¹(g(x) * W) = x * g⁻¹(W)
    expected = np.mean([images * inverse(weights) for _, inverse in SYMMETRIES], axis=0)
    np.testing.assert_allclose(averaged(model, images, "dihedral", maps=True), expected, atol=1e-6)
    flips = np.mean([images * inverse(weights) for _, inverse in SYMMETRIES[:3]], axis=0)
    np.testing.assert_allclose(averaged(model, images, "flips", maps=True), flips, atol=1e-6)


def test_vector_outputs_are_averaged_as_they_are():
    """A classifier's outputs do not move with the image: the mean of the views' outputs, not turned back."""
    images = np.random.default_rng(2).random((4, 5, 5, 1)).astype(np.float32)
    weights = np.random.default_rng(3).random((5, 5)).astype(np.float32)
    model = lambda x: np.einsum("nhwc,hw->nc", x, weights)  # noqa: E731
    expected = np.mean([model(np.ascontiguousarray(forward(images))) for forward, _ in SYMMETRIES], axis=0)
    np.testing.assert_allclose(averaged(model, images, "dihedral", maps=False), expected, rtol=1e-5)


def test_old_boolean_values_and_bad_ones():
    assert (tta_mode(True), tta_mode(False), tta_mode(None), tta_mode("dihedral")) == (
        "flips",
        "none",
        "none",
        "dihedral",
    )
    with pytest.raises(ConfigError, match=r"tta='rotations' is unknown; valid: none, flips, dihedral"):
        tta_mode("rotations")


def test_dihedral_views_need_square_inputs():
    with pytest.raises(ConfigError, match=r"needs square inputs; the model takes 4x6; valid: tta=flips"):
        averaged(lambda x: x, np.zeros((1, 4, 6, 3), np.float32), "dihedral", maps=True)
    assert averaged(lambda x: x, np.ones((1, 4, 6, 3), np.float32), "flips", maps=True).shape == (1, 4, 6, 3)


def test_a_task_whose_targets_move_with_the_views_refuses_them():
    from pipeline.tasks import get_task

    expected = (
        r"tta=flips averages over mirrored and turned views, but a box moves .*\(localization task\); valid: tta=none"
    )
    with pytest.raises(ConfigError, match=expected):
        get_task("localization").outputs(None, np.zeros((1, 4, 4, 3), np.float32), "flips")


def test_the_views_of_a_batch_go_to_the_model_in_one_call_and_a_large_set_in_parts(monkeypatch):
    """Each call of the model costs Keras' set-up, so a batch's eight views are one call; a set larger than
    STACKED_VALUES is taken in parts, with the same mean as in one call (a per-pixel model: the map itself)."""
    import pipeline.tasks.tta as tta

    images = np.random.default_rng(4).random((5, 4, 4, 2)).astype(np.float32)
    calls = []

    def model(x):
        calls.append(len(x))
        return np.tanh(2 * x) - x**2

    expected = model(images)
    calls.clear()
    np.testing.assert_allclose(averaged(model, images, "dihedral", maps=True), expected, atol=1e-6)
    assert calls == [40]
    calls.clear()
    monkeypatch.setattr(tta, "STACKED_VALUES", 2 * 4 * 4 * 2 * 8)  # two images' eight views a call
    np.testing.assert_allclose(averaged(model, images, "dihedral", maps=True), expected, atol=1e-6)
    assert calls == [16, 16, 8]
