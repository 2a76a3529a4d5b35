"""Classification inference and scoring: accuracy, top-k, per-class precision and recall, confusion matrix."""

import keras
import numpy as np
from sklearn.metrics import precision_recall_fscore_support

from pipeline.metrics import confusion_matrix


def evaluate(
    model: keras.Model, images: np.ndarray, labels: np.ndarray, classes: list[str], batch_size: int = 32, top_k: int = 3
) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
    """Scores over the whole split; also the confusion matrix and the predicted labels."""
    probabilities = model.predict(images.astype(np.float32), batch_size=batch_size, verbose=0)
    if isinstance(probabilities, (list, tuple)):  # auxiliary heads: score the main classifier
        probabilities = probabilities[0]
    predicted = np.argmax(probabilities, axis=-1)
    k = min(top_k, len(classes))
    top = np.argsort(probabilities, axis=-1)[:, -k:]
    scores = {
        "accuracy": float(np.mean(predicted == labels)),
        f"top{k}_accuracy": float(np.mean((top == labels[:, None]).any(-1))),
    }
    precision, recall, _, _ = precision_recall_fscore_support(
        labels, predicted, labels=range(len(classes)), zero_division=0
    )
    for name, p, r in zip(classes, precision, recall):
        scores[f"precision_{name}"], scores[f"recall_{name}"] = float(p), float(r)
    return scores, confusion_matrix(labels, predicted, len(classes)), predicted
