"""Image classification: one class per image. Targets are labels (N,) indexing the class names."""

import csv
from pathlib import Path

import keras
import numpy as np
from sklearn.metrics import precision_recall_fscore_support

from pipeline.errors import ConfigError
from pipeline.evaluation.metrics import confusion_matrix
from pipeline.plots import viz
from pipeline.tasks.base import Report, Written
from pipeline.tasks.scoring import Stacked, TopK
from pipeline.tasks.tta import averaged


def probabilities_of(model: keras.Model, images: np.ndarray, batch_size: int = 32, tta=False) -> np.ndarray:
    """Class probabilities (N, C) of the main classifier (GoogLeNet's auxiliary heads are left out); with tta
    (pipeline.tasks.tta), their mean over the views it names."""

    def main_head(x: np.ndarray) -> np.ndarray:
        probabilities = model.predict(x, batch_size=batch_size, verbose=0)
        return probabilities[0] if isinstance(probabilities, (list, tuple)) else probabilities

    return np.asarray(averaged(main_head, images.astype(np.float32), tta, False), np.float32)


def scores_of(probabilities: np.ndarray, labels: np.ndarray, classes: list[str], top_k: int = 3):
    """Scores over the whole split (accuracy, top-k, per-class precision and recall), the confusion matrix
    and the predicted labels."""
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


def write_csv(path: Path, names: list[str], probabilities: np.ndarray, classes: list[str]) -> None:
    """file, label (the predicted class name), then one probability column per class."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "label", *classes])
        for name, row in zip(names, probabilities):
            writer.writerow([name, classes[int(np.argmax(row))], *(f"{p:.6f}" for p in row)])


class ClassificationTally:
    """Per image: true and predicted label and the probabilities (the scores, predictions.csv and the bootstrap
    come from these rows); kept pictures: the first 4·num_examples and the surest mistakes."""

    def __init__(self, classes: list[str], num_examples: int = 6):
        self.classes, self.num_examples = classes, num_examples
        self.labels, self.probabilities = Stacked(), Stacked()
        self.first, self.surest_wrong = TopK(4 * num_examples), TopK(4 * num_examples)

    def add(self, start, images, targets, outputs) -> None:
        self.labels.add(np.asarray(targets, np.int64))
        self.probabilities.add(outputs)
        if not self.num_examples:
            return
        predicted = outputs.argmax(axis=-1)
        for k, (image, label, guess, row) in enumerate(zip(images, targets, predicted, outputs)):
            self.first.offer(-(start + k), start + k, image, label, guess)
            if guess != label:
                self.surest_wrong.offer(row[guess], start + k, image, label, guess)

    def _rows(self) -> tuple[np.ndarray, np.ndarray]:
        return self.labels.all(), self.probabilities.all()

    def headline_of(self, indices: np.ndarray) -> float:
        labels, probabilities = self._rows()
        return float(np.mean(probabilities[indices].argmax(axis=-1) == labels[indices]))

    def report(self) -> Report:
        labels, probabilities = self._rows()
        scores, cm, predicted = scores_of(probabilities, labels, self.classes)
        seen = [self.classes[c] for c in np.unique(predicted)]
        if not self.num_examples:  # scores only
            return Report(scores, "accuracy", predicted=seen)
        classes = self.classes
        table = "".join(
            [f"index,true,label,{','.join(classes)}\n"]
            + [
                f"{i},{classes[t]},{classes[p]},{','.join(f'{v:.6f}' for v in row)}\n"
                for i, (t, p, row) in enumerate(zip(labels, predicted, probabilities))
            ]
        )
        figures = {
            "plots/test_predictions.png": viz.classification_grid(*self.first.columns(), classes),
            "plots/confusion_matrix.png": viz.confusion_matrix_figure(cm, classes),
        }
        if len(self.surest_wrong):
            figures["plots/worst_errors.png"] = viz.classification_grid(*self.surest_wrong.columns(), classes)
        return Report(scores, "accuracy", figures, table=table, predicted=seen)


class Classification:
    name = "classification"
    target = "label"
    monitor = "val_accuracy"
    headline = "accuracy"

    def loss_and_metrics(self, loss_options: dict, num_classes: int) -> tuple:
        """Cross-entropy on the labels, smoothed by loss.label_smoothing (the other conf/loss terms are the
        segmentation losses')."""
        from pipeline.training.losses import SmoothedSparseCrossentropy

        smoothing = float(loss_options.get("label_smoothing") or 0.0)
        loss = SmoothedSparseCrossentropy(smoothing) if smoothing else keras.losses.SparseCategoricalCrossentropy()
        return loss, [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]

    def check_targets(self, targets: np.ndarray, classes: list[str], split: str, data_name: str) -> None:
        """Class labels must index data.classes."""
        if len(targets) == 0:
            return
        low, high = int(targets.min()), int(targets.max())
        if low < 0 or high >= len(classes):
            raise ConfigError(
                f"data.classes has {len(classes)} names but the {split} split of data={data_name} has labels "
                f"{low}..{high}; valid: a list of {high + 1} class names (one per label)"
            )

    def tally(self, classes: list[str], num_examples: int = 6, **_):
        return ClassificationTally(classes, num_examples)

    def outputs(self, model, images: np.ndarray, tta=False) -> np.ndarray:
        return probabilities_of(model, images, len(images), tta)

    def predict(
        self, model, images, names, classes, out: Path, batch_size: int = 32, files=None, tta=False, **_
    ) -> Written:
        """predictions.csv (file as found, label, one probability per class) and a contact sheet of the images."""
        from pipeline.data.folders import resize_image

        out.mkdir(parents=True, exist_ok=True)
        shape = tuple(model.inputs[0].shape[1:3])
        images = [resize_image(image, shape) for image in images]
        probabilities = probabilities_of(model, np.stack(images), batch_size, tta)
        table = out / "predictions.csv"
        write_csv(table, list(files or names), probabilities, classes)
        predicted = probabilities.argmax(axis=-1)
        shown = slice(0, 64)
        sheet = viz.contact_sheet(
            np.stack(images)[shown], names[shown], predicted[shown], probabilities[shown], classes
        )
        sheet_path = out / "contact_sheet.png"
        sheet.savefig(sheet_path, dpi=100)
        viz.plt.close(sheet)
        return Written(files=[table, sheet_path], logged=[table, sheet_path])

    def explain(self, probabilities: np.ndarray, targets: np.ndarray | None, classes: list[str]) -> tuple:
        """Of the true class (else the predicted one)."""
        from pipeline.interpret import probes

        predicted = probabilities.argmax(axis=-1)
        labels = predicted if targets is None else targets
        names = ["predicted class" if targets is None else "true class"]
        weights = [probes.target_weights(probabilities.shape, labels)]
        if targets is None:
            rows = [f"predicted {classes[p]}" for p in predicted]
        else:
            rows = [f"true {classes[t]}, predicted {classes[p]}" for t, p in zip(labels, predicted)]
        return names, weights, rows
