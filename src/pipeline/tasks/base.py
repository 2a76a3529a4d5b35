"""What a task is: the kind of target it learns, how it is scored, what predict writes, what visualize explains.

Stages ask the task (`get_task(cfg.data.task)`) and never branch on its name. A new task is one module
defining a class with these attributes and methods, and one entry in `pipeline.tasks.TASKS`.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

LOWER_IS_BETTER = ("loss", "error", "mae", "mse", "rmse")


def direction(monitor: str) -> str:
    """ "min" for losses and errors (val_loss, val_mae), "max" for scores (val_accuracy, val_mean_iou)."""
    last = monitor.removeprefix("val_").rsplit("_", 1)[-1]
    return "min" if last in LOWER_IS_BETTER or monitor.endswith("loss") else "max"


@dataclass
class Report:
    """A split's evaluation: scores by name, the headline score's name, pictures by artifact path, the rows."""

    scores: dict[str, float]
    headline: str
    figures: dict = field(default_factory=dict)
    count: int = 0  # images scored
    table: str | None = None  # CSV text, one row per image (classifiers and localizers), logged as predictions.csv
    predicted: list[str] | None = None  # the classes predicted at least once (tasks whose outputs are classes)

    @property
    def value(self) -> float:
        return self.scores[self.headline]


@dataclass
class Written:
    """What predict wrote: the files (outputs never overwrite each other) and those worth logging to MLflow."""

    files: list[Path] = field(default_factory=list)
    logged: list[Path] = field(default_factory=list)


class Task(Protocol):
    name: str
    target: str  # a kind of pipeline.tasks.targets.TARGETS: mask, label or boxes
    monitor: str  # the validation metric the best checkpoint is chosen by
    headline: str  # the test metric sweeps and pipeline.commands.compare rank by (without the test_ prefix)

    def loss_and_metrics(self, loss_options: dict, num_classes: int) -> tuple: ...

    def check_targets(self, targets: np.ndarray, classes: list[str], split: str, data_name: str) -> None: ...

    def tally(self, classes: list[str], num_examples: int, ignore_label: int | None = None):
        """What scores a split batch by batch (pipeline.tasks.scoring.Tally); pipeline.tasks.scoring.evaluate
        runs it."""

    def outputs(self, model, images: np.ndarray, tta=False) -> np.ndarray:
        """The model's main output for a batch of float32 images (with tta, averaged over the views
        pipeline.tasks.tta names; a task whose targets move with them refuses it)."""

    def predict(
        self, model, images: list[np.ndarray], names: list[str], classes: list[str], out: Path, **options
    ) -> Written: ...

    def explain(self, probabilities: np.ndarray, targets: np.ndarray | None, classes: list[str]) -> tuple: ...


def unique_names(paths: list[Path]) -> list[str]:
    """An output name per input file: its stem, or stem_suffix where two inputs share a stem
    (photo.png and photo.jpg -> photo_png, photo_jpg), numbered if still taken, so outputs never
    overwrite each other."""
    stems = [p.stem for p in paths]
    names: list[str] = []
    for path in paths:
        name = f"{path.stem}_{path.suffix.lstrip('.')}" if stems.count(path.stem) > 1 else path.stem
        base, k = name, 2
        while name in names:
            name, k = f"{base}_{k}", k + 1
        names.append(name)
    return names
