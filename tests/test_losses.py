"""Segmentation losses against NumPy references and Keras' own cross-entropy."""

import keras
import numpy as np
import pytest

from pipeline.errors import ConfigError
from pipeline.training.losses import SegmentationLoss

rng = np.random.default_rng(0)
LABELS = rng.integers(0, 3, (2, 5, 6))
LOGITS = rng.normal(size=(2, 5, 6, 3))
PROBS = (np.exp(LOGITS) / np.exp(LOGITS).sum(-1, keepdims=True)).astype("float32")
P_TRUE = np.take_along_axis(PROBS, LABELS[..., None], -1)[..., 0].astype(np.float64)


def value(**options):
    return float(keras.ops.convert_to_numpy(SegmentationLoss(3, **options)(LABELS, PROBS)))


def test_cross_entropy_equals_keras():
    expected = float(keras.losses.SparseCategoricalCrossentropy()(LABELS, PROBS))
    assert value() == pytest.approx(expected, rel=1e-5)


def test_class_weights_scale_each_pixel_by_its_true_class():
    weights = [0.2, 1.0, 3.0]
    expected = np.mean(-np.log(P_TRUE) * np.array(weights)[LABELS])
    assert value(class_weights=weights) == pytest.approx(expected, rel=1e-5)


def test_ignored_pixels_count_in_no_term():
    keep = LABELS != 1
    assert value(ignore_label=1) == pytest.approx(np.mean(-np.log(P_TRUE[keep])), rel=1e-5)
    one_hot = np.eye(3)[LABELS] * keep[..., None]
    masked_probs = PROBS * keep[..., None]
    inter, sizes = (masked_probs * one_hot).sum((0, 1, 2)), masked_probs.sum((0, 1, 2)) + one_hot.sum((0, 1, 2))
    assert value(ce=0, dice=1, ignore_label=1) == pytest.approx(1 - np.mean((2 * inter + 1) / (sizes + 1)), rel=1e-5)


def test_soft_dice_and_focal_equal_their_formulas():
    one_hot = np.eye(3)[LABELS]
    inter, sizes = (PROBS * one_hot).sum((0, 1, 2)), PROBS.sum((0, 1, 2)) + one_hot.sum((0, 1, 2))
    dice = 1 - np.mean((2 * inter + 1) / (sizes + 1))
    assert value(ce=0, dice=1) == pytest.approx(dice, rel=1e-5)
    focal = np.mean(-((1 - P_TRUE) ** 2) * np.log(P_TRUE))
    assert value(ce=0, focal=1, gamma=2.0) == pytest.approx(focal, rel=1e-5)
    assert value(ce=0, focal=1, gamma=0.0) == pytest.approx(value(), rel=1e-6)  # gamma 0 is plain CE
    assert value(ce=1, dice=0.5) == pytest.approx(value() + 0.5 * dice, rel=1e-5)


def test_a_void_label_no_class_uses_counts_in_no_term():
    """VOC's 255 on object boundaries: those pixels are no class; every term equals its formula on the rest."""
    void = LABELS.copy()
    void[:, 0, :] = 255
    keep = void != 255
    got = float(keras.ops.convert_to_numpy(SegmentationLoss(3, ignore_label=255)(void, PROBS)))
    assert got == pytest.approx(np.mean(-np.log(P_TRUE[keep])), rel=1e-5)
    one_hot = np.eye(3)[np.where(keep, void, 0)] * keep[..., None]
    masked = PROBS * keep[..., None]
    inter, sizes = (masked * one_hot).sum((0, 1, 2)), masked.sum((0, 1, 2)) + one_hot.sum((0, 1, 2))
    dice = float(keras.ops.convert_to_numpy(SegmentationLoss(3, ce=0, dice=1, ignore_label=255)(void, PROBS)))
    assert dice == pytest.approx(1 - np.mean((2 * inter + 1) / (sizes + 1)), rel=1e-5)


def lovasz_reference(probs: np.ndarray, labels: np.ndarray, ignore=None) -> float:
    """Berman et al.'s published lovasz_softmax_flat (classes='present') in NumPy, a class at a time, ignored
    pixels removed rather than masked."""
    probs, labels = probs.reshape(-1, probs.shape[-1]).astype(np.float64), labels.reshape(-1)
    if ignore is not None:
        probs, labels = probs[labels != ignore], labels[labels != ignore]
    losses = []
    for c in range(probs.shape[1]):
        fg = (labels == c).astype(np.float64)
        if not fg.any():
            continue
        errors = np.abs(fg - probs[:, c])
        order = np.argsort(-errors, kind="stable")
        fg_sorted = fg[order]
        jaccard = 1 - (fg.sum() - np.cumsum(fg_sorted)) / (fg.sum() + np.cumsum(1 - fg_sorted))
        jaccard[1:] = jaccard[1:] - jaccard[:-1]
        losses.append(np.dot(errors[order], jaccard))
    return float(np.mean(losses))


def test_lovasz_softmax_on_hard_predictions_is_one_minus_the_mean_iou_of_the_present_classes():
    """The Lovász extension agrees with the set function it extends: on 0/1 predictions the term is exactly
    1 - IoU per class present in the labels, averaged (scikit-learn's Jaccard index as the reference)."""
    from sklearn.metrics import jaccard_score

    labels = np.where(LABELS == 2, 0, LABELS)  # class 2 absent from the labels: not averaged
    predicted = PROBS.argmax(-1)  # predicts every class, class 2 included
    hard = np.eye(3, dtype="float32")[predicted]
    iou = jaccard_score(labels.ravel(), predicted.ravel(), labels=[0, 1], average=None)
    got = float(keras.ops.convert_to_numpy(SegmentationLoss(3, ce=0, lovasz=1)(labels, hard)))
    assert got == pytest.approx(1 - iou.mean(), abs=1e-5)
    assert got == pytest.approx(lovasz_reference(hard, labels), abs=1e-5)


def test_lovasz_softmax_equals_the_paper_s_reference_and_skips_ignored_pixels():
    assert value(ce=0, lovasz=1) == pytest.approx(lovasz_reference(PROBS, LABELS), rel=1e-5)
    void = LABELS.copy()
    void[:, 0, :] = 255
    got = float(keras.ops.convert_to_numpy(SegmentationLoss(3, ce=0, lovasz=1, ignore_label=255)(void, PROBS)))
    assert got == pytest.approx(lovasz_reference(PROBS, void, ignore=255), rel=1e-5)
    assert value(ce=1, lovasz=0.5) == pytest.approx(value() + 0.5 * lovasz_reference(PROBS, LABELS), rel=1e-5)


def test_bad_loss_config_names_the_key():
    with pytest.raises(ConfigError, match="loss.class_weights has 2 values but the data has 3 classes"):
        SegmentationLoss(3, class_weights=[1, 2])
    with pytest.raises(ConfigError, match="loss.ignore_label=300 is invalid"):
        SegmentationLoss(3, ignore_label=300)
    with pytest.raises(ConfigError, match="lovasz=-1 are invalid"):
        SegmentationLoss(3, lovasz=-1)


def test_perfect_prediction_gives_near_zero_loss_and_gradients_flow():
    perfect = np.eye(3, dtype="float32")[LABELS]
    assert float(SegmentationLoss(3, ce=1, dice=1, focal=1, lovasz=1)(LABELS, perfect)) < 1e-4
    model = keras.Sequential([keras.Input((5, 6, 3)), keras.layers.Conv2D(3, 1, activation="softmax")])
    model.compile("adam", SegmentationLoss(3, ce=1, dice=1, lovasz=1))
    before = model.evaluate(LOGITS, LABELS, verbose=0)
    model.fit(LOGITS, LABELS, epochs=30, verbose=0)
    assert model.evaluate(LOGITS, LABELS, verbose=0) < before
