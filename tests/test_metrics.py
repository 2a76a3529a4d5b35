"""Segmentation scores from one whole-split confusion matrix, checked against scikit-learn."""

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix as sk_confusion_matrix
from sklearn.metrics import f1_score, jaccard_score

from pipeline.evaluation.metrics import confusion_matrix, segmentation_scores

CLASSES = ["background", "circle", "square", "triangle"]


def random_split(seed=0, n=5):
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 4, (n, 16, 16))
    predicted = np.where(rng.random(truth.shape) < 0.7, truth, rng.integers(0, 4, truth.shape))
    return truth, predicted


def test_confusion_matrix_equals_sklearn():
    truth, predicted = random_split()
    np.testing.assert_array_equal(
        confusion_matrix(truth, predicted, 4), sk_confusion_matrix(truth.ravel(), predicted.ravel(), labels=range(4))
    )


def test_iou_dice_and_accuracy_equal_sklearn():
    truth, predicted = random_split(1)
    scores = segmentation_scores(confusion_matrix(truth, predicted, 4), CLASSES)
    iou = jaccard_score(truth.ravel(), predicted.ravel(), average=None, labels=range(4))
    dice = f1_score(truth.ravel(), predicted.ravel(), average=None, labels=range(4))
    assert scores["mean_iou"] == pytest.approx(iou.mean())
    assert scores["dice"] == pytest.approx(dice.mean())
    assert scores["pixel_accuracy"] == pytest.approx((truth == predicted).mean())
    for name, expected in zip(CLASSES, iou):
        assert scores[f"iou_{name}"] == pytest.approx(expected)


def test_class_absent_from_truth_and_prediction_is_left_out_of_the_mean():
    truth = np.array([[0, 0, 1, 1]])
    predicted = np.array([[0, 1, 1, 1]])
    scores = segmentation_scores(confusion_matrix(truth, predicted, 3), ["bg", "a", "b"])
    # hand computed: IoU(bg) = 1/2, IoU(a) = 2/3, class b never occurs
    assert scores["mean_iou"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert np.isnan(scores["iou_b"])


def test_whole_split_score_is_not_a_mean_of_batch_scores():
    # batch 1: one large perfect object; batch 2: one tiny missed object -> pooled IoU stays high
    t1, p1 = np.ones((1, 10, 10), int), np.ones((1, 10, 10), int)
    t2, p2 = np.zeros((1, 10, 10), int), np.zeros((1, 10, 10), int)
    t2[0, 0, 0] = 1
    pooled = segmentation_scores(confusion_matrix(np.concatenate([t1, t2]), np.concatenate([p1, p2]), 2), ["bg", "fg"])
    per_batch = [
        segmentation_scores(confusion_matrix(t, p, 2), ["bg", "fg"])["iou_fg"] for t, p in ((t1, p1), (t2, p2))
    ]
    assert pooled["iou_fg"] == pytest.approx(100 / 101)
    assert np.mean(per_batch) == pytest.approx(0.5)
