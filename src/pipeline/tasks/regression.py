"""Regression on extracted features (the lecture's fourth use of the fully-connected layer): a vector of
numbers per image, one per output name (data.classes), e.g. the fraction of the image each shape covers.
Targets are values (N, K) float32; scored by mean absolute error (the headline, lower is better), RMSE and
R² (the coefficient of determination, averaged over the outputs as scikit-learn's `uniform_average`)."""

import csv
from pathlib import Path

import keras
import numpy as np

from pipeline.errors import ConfigError
from pipeline.plots import viz
from pipeline.tasks.base import Report, Written
from pipeline.tasks.scoring import Stacked
from pipeline.tasks.tta import averaged


def predict_values(model: keras.Model, images: np.ndarray, batch_size: int = 32, tta=False) -> np.ndarray:
    """The predicted values (N, K); with tta (pipeline.tasks.tta), their mean over the views it names (for
    targets the views leave alone, as a shape's coverage)."""
    predict = lambda x: model.predict(x, batch_size=batch_size, verbose=0)  # noqa: E731
    return np.asarray(averaged(predict, images.astype(np.float32), tta, False), np.float32)


def regression_scores(truth: np.ndarray, predicted: np.ndarray, names: list[str]) -> dict[str, float]:
    """mae, rmse, r2 (mean over outputs of 1 - SS_res / SS_tot; an output constant in the truth counts 0 when
    predicted imperfectly, 1 when exactly, as scikit-learn), and mae_<name> per output."""
    error = predicted - truth
    residual = (error**2).sum(axis=0)
    total = ((truth - truth.mean(axis=0)) ** 2).sum(axis=0)
    r2 = np.where(total > 0, 1 - residual / np.where(total > 0, total, 1), np.where(residual == 0, 1.0, 0.0))
    scores = {"mae": float(np.abs(error).mean()), "rmse": float(np.sqrt((error**2).mean())), "r2": float(r2.mean())}
    scores.update({f"mae_{name}": float(np.abs(error[:, k]).mean()) for k, name in enumerate(names)})
    return scores


class RegressionTally:
    """Per image: its true and predicted values (K numbers each: small enough to keep for any split)."""

    def __init__(self, classes: list[str], num_examples: int = 6):
        self.classes, self.num_examples, self.truth, self.predicted = classes, num_examples, Stacked(), Stacked()

    def add(self, start, images, targets, outputs) -> None:
        self.truth.add(np.asarray(targets, np.float32))
        self.predicted.add(outputs)

    def _rows(self) -> tuple[np.ndarray, np.ndarray]:
        return self.truth.all(), self.predicted.all()

    def headline_of(self, indices: np.ndarray) -> float:
        truth, predicted = self._rows()
        return float(np.abs(predicted[indices] - truth[indices]).mean())

    def report(self) -> Report:
        truth, predicted = self._rows()
        scores = regression_scores(truth, predicted, self.classes)
        if not self.num_examples:
            return Report(scores, "mae")
        figures = {"plots/predicted_vs_true.png": viz.values_scatter(truth, predicted, self.classes)}
        header = "index," + ",".join([*(f"true_{c}" for c in self.classes), *self.classes]) + "\n"
        rows = [f"{i},{','.join(f'{v:.5f}' for v in (*t, *p))}\n" for i, (t, p) in enumerate(zip(truth, predicted))]
        return Report(scores, "mae", figures, table=header + "".join(rows))


class Regression:
    name = "regression"
    target = "values"
    monitor = "val_mae"
    headline = "mae"

    def loss_and_metrics(self, loss_options: dict, num_classes: int) -> tuple:
        from pipeline.training.losses import refuse_smoothing

        refuse_smoothing(loss_options, self.name)
        return keras.losses.MeanSquaredError(), [keras.metrics.MeanAbsoluteError(name="mae")]

    def check_targets(self, targets: np.ndarray, classes: list[str], split: str, data_name: str) -> None:
        if len(targets) and (targets.ndim != 2 or targets.shape[1] != len(classes)):
            raise ConfigError(
                f"the {split} split of data={data_name} has targets of shape {targets.shape}; valid: values "
                f"(N, {len(classes)}), one per name in data.classes {list(classes)}"
            )
        if len(targets) and not np.isfinite(targets).all():
            raise ConfigError(f"the {split} split of data={data_name} has targets that are NaN or infinite")

    def tally(self, classes: list[str], num_examples: int = 6, **_):
        return RegressionTally(classes, num_examples)

    def outputs(self, model, images: np.ndarray, tta=False) -> np.ndarray:
        return predict_values(model, images, len(images), tta)

    def predict(self, model, images, names, classes, out: Path, batch_size=32, files=None, tta=False, **_) -> Written:
        """predictions.csv: the file as found and one predicted value per output name."""
        from pipeline.data.folders import resize_image

        out.mkdir(parents=True, exist_ok=True)
        shape = tuple(model.inputs[0].shape[1:3])
        values = predict_values(model, np.stack([resize_image(image, shape) for image in images]), batch_size, tta)
        table = out / "predictions.csv"
        with table.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["file", *classes])
            writer.writerows([file, *(f"{v:.5f}" for v in row)] for file, row in zip(files or names, values))
        return Written(files=[table], logged=[table])

    def explain(self, probabilities: np.ndarray, targets: np.ndarray | None, classes: list[str]) -> tuple:
        """Each output in turn: what in the image raises the value predicted for it."""
        from pipeline.interpret import probes

        count = len(probabilities)
        weights = [probes.target_weights(probabilities.shape, np.full(count, k)) for k in range(len(classes))]
        rows = [", ".join(f"{c} {v:.2f}" for c, v in zip(classes, row)) for row in probabilities]
        return [f"output {c}" for c in classes], weights, rows
