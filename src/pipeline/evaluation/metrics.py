"""Segmentation scores from one confusion matrix accumulated over a whole split (never a mean of batch means)."""

import numpy as np


def confusion_matrix(
    y_true: np.ndarray, y_pred: np.ndarray, num_classes: int, ignore_label: int | None = None
) -> np.ndarray:
    """(num_classes, num_classes) int64 counts; rows are true labels, columns predicted labels.

    Pixels whose true label is `ignore_label` are not counted.
    """
    y_true, y_pred = np.asarray(y_true).ravel().astype(np.int64), np.asarray(y_pred).ravel().astype(np.int64)
    if ignore_label is not None:
        keep = y_true != ignore_label
        y_true, y_pred = y_true[keep], y_pred[keep]
    return np.bincount(y_true * num_classes + y_pred, minlength=num_classes**2).reshape(num_classes, num_classes)


def segmentation_scores(cm: np.ndarray, class_names: list[str]) -> dict[str, float]:
    """Pixel accuracy, IoU = TP / (TP + FP + FN) and Dice = 2TP / (2TP + FP + FN), per class and averaged.

    Averages run over the classes that occur in the truth or the prediction; a class absent from both
    has no defined IoU and is left out (reported as NaN per class).
    """
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    fp, fn = cm.sum(axis=0) - tp, cm.sum(axis=1) - tp
    present = (tp + fp + fn) > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(present, tp / (tp + fp + fn), np.nan)
        dice = np.where(present, 2 * tp / (2 * tp + fp + fn), np.nan)
    scores = {
        "pixel_accuracy": float(tp.sum() / cm.sum()) if cm.sum() else float("nan"),
        "mean_iou": float(np.nanmean(iou)) if present.any() else float("nan"),
        "dice": float(np.nanmean(dice)) if present.any() else float("nan"),
    }
    for name, class_iou, class_dice in zip(class_names, iou, dice):
        scores[f"iou_{name}"] = float(class_iou)
        scores[f"dice_{name}"] = float(class_dice)
    return scores
