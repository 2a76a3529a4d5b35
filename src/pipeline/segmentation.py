"""Segmentation inference and scoring shared by the train, evaluate and predict stages."""

import keras
import numpy as np

from pipeline.metrics import confusion_matrix, segmentation_scores


def predict_probabilities(
    model: keras.Model, images: np.ndarray, batch_size: int = 32, tta: bool = False
) -> np.ndarray:
    """Class probabilities (N, H, W, C); with tta, the mean over the image and its left-right and up-down flips."""
    x = images.astype(np.float32)
    probabilities = model.predict(x, batch_size=batch_size, verbose=0)
    if tta:
        probabilities = probabilities + model.predict(x[:, :, ::-1], batch_size=batch_size, verbose=0)[:, :, ::-1]
        probabilities = probabilities + model.predict(x[:, ::-1], batch_size=batch_size, verbose=0)[:, ::-1]
        probabilities /= 3.0
    return probabilities


def evaluate(
    model: keras.Model,
    images: np.ndarray,
    masks: np.ndarray,
    classes: list[str],
    batch_size: int = 32,
    tta: bool = False,
    ignore_label: int | None = None,
) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
    """Scores over the whole split from one confusion matrix; also the matrix and the predicted labels."""
    predicted = np.argmax(predict_probabilities(model, images, batch_size, tta), axis=-1).astype(np.uint8)
    cm = confusion_matrix(masks, predicted, len(classes), ignore_label)
    return segmentation_scores(cm, classes), cm, predicted


def per_image_mean_iou(masks: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """Mean IoU of each image on its own (for finding the best and worst predictions)."""
    names = [str(c) for c in range(num_classes)]
    return np.array(
        [segmentation_scores(confusion_matrix(m, p, num_classes), names)["mean_iou"] for m, p in zip(masks, predicted)]
    )
