"""The library behind the train and transfer stages: compile a model for its task, score the test split
and log what a run records. Plain functions; the train and transfer commands call them."""

import functools
import logging
import math
from collections.abc import Mapping

import keras
import numpy as np

from pipeline import tracking
from pipeline.config.spec import plain
from pipeline.errors import ConfigError
from pipeline.plots import viz
from pipeline.tasks import Report, Task, direction
from pipeline.tasks.scoring import CONFIDENCE, evaluate
from pipeline.tasks.targets import target_of
from pipeline.tasks.tta import tta_mode

log = logging.getLogger(__name__)


def model_options(model_cfg: Mapping) -> dict:
    """conf/model/<name>.yaml minus its name, as plain values: the builder's keyword arguments."""
    return {k: v for k, v in plain(model_cfg).items() if k != "name"}


def compile_model(
    model: keras.Model,
    task: Task,
    loss_options: dict,
    optimizer,
    num_classes: int,
    monitor: str | None = None,
    jit_compile: bool | str = False,
    steps_per_execution: int = 1,
) -> tuple[str, str]:
    """Compile with the task's loss and metrics; returns the metric the best checkpoint is chosen by and
    its direction ("max" for scores, "min" for losses such as val_loss)."""
    if len(model.outputs) > 1 and not target_of(task.target).image_class:
        raise ConfigError(
            f"model {model.name} has {len(model.outputs)} outputs; only classifiers may have auxiliary heads"
        )
    loss, metrics = task.loss_and_metrics(loss_options, num_classes)
    if len(model.outputs) > 1:  # GoogLeNet's auxiliary classifiers: weighted 0.3 in the loss, as in the paper
        main = model.output_names[0]
        model.compile(
            optimizer=optimizer,
            loss=[loss] * len(model.outputs),
            loss_weights=[1.0] + [0.3] * (len(model.outputs) - 1),
            metrics={main: metrics},
            jit_compile=jit_compile,
            steps_per_execution=steps_per_execution,
        )
        monitor = monitor or f"val_{main}_{task.monitor.removeprefix('val_')}"
    else:
        model.compile(optimizer=optimizer, loss=loss, metrics=metrics, jit_compile=jit_compile,
                      steps_per_execution=steps_per_execution)  # fmt: skip
        monitor = monitor or task.monitor
    return monitor, direction(monitor)


def shift_curve(model, task: Task, samples, classes, batch: int, shifts: list[int], name: str, **read) -> None:
    """The headline score on the test images moved right by each shift (np.roll: the scene wraps around),
    logged as metric shift_accuracy with the shift as its step, so MLflow overlays the curves of several runs."""
    scores = []
    for shift in shifts:
        moved = functools.partial(np.roll, shift=shift, axis=2)
        report = evaluate(task, model, samples, classes, batch, num_examples=0, transform=moved, confidence=False,
                          desc=f"scoring shift {shift}", **read)  # fmt: skip
        scores.append(report.value)
        tracking.log_metrics({f"shift_{task.headline}": scores[-1]}, step=shift)
    tracking.log_figure(viz.accuracy_against_shift(shifts, {name: scores}), f"plots/{task.headline}_vs_shift.png")
    log.info("%s against shift %s: %s", task.headline, shifts, [round(a, 3) for a in scores])


def selection(history: dict[str, list[float]], monitor: str, mode: str, kept: int | None = None) -> tuple[float, int]:
    """(value, epoch) of the validation score a run is chosen by: `monitor` at the kept epoch, which is the
    best epoch in `mode` unless `kept` names it (a stage that keeps its last epoch). NaN when never finite."""
    values = [float(v) for v in history.get(monitor, [])]
    finite = [e for e, v in enumerate(values) if math.isfinite(v)]
    if kept is None and finite:
        kept = (max if mode == "max" else min)(finite, key=lambda e: values[e])
    if kept is None or not 0 <= kept < len(values):
        return math.nan, -1
    return values[kept], kept


def log_selection(history: dict[str, list[float]], monitor: str, mode: str, kept: int | None = None) -> float:
    """Logs `selection_<monitor>` (the kept epoch's validation score) with its epoch, and the tags sweeps,
    pipeline.commands.compare and sweep.register rank by (selection_metric, selection_mode); returns the value.
    Model selection sees validation data only: the test split stays the chosen model's held-out estimate."""
    value, epoch = selection(history, monitor, mode, kept)
    name = f"selection_{monitor}"
    if math.isfinite(value):
        tracking.log_metrics({name: value, "selection_epoch": epoch + 1})
    tracking.set_tags({"selection_metric": name, "selection_mode": mode})
    log.info("chosen by %s (%s) at epoch %d: %.4f", monitor, mode, epoch + 1, value)
    return value


def log_report(report: Report, prefix: str = "test", headline: bool = True) -> None:
    """A report's scores as <prefix>_<name> metrics, its pictures as artifacts, and (with `headline`) the headline
    tag (the held-out estimate shown beside the selection metric; nothing ranks by it)."""
    tracking.log_metrics({f"{prefix}_{name}": value for name, value in report.scores.items()})
    tracking.log_metrics({f"{prefix}_images": report.count})
    if headline:
        tracking.set_tags({"headline_metric": f"{prefix}_{report.headline}"})
    for path, figure in report.figures.items():
        tracking.log_figure(figure, path)
    low, high = (report.scores.get(f"{report.headline}_ci_{end}", math.nan) for end in ("low", "high"))
    log.info("%s %s: %.4f (%.0f%% bootstrap interval over images %.4f..%.4f)", prefix, report.headline,
             report.value, 100 * CONFIDENCE, low, high)  # fmt: skip
    if report.predicted is not None and len(report.predicted) == 1:
        [only] = report.predicted
        tracking.set_tags({f"{prefix}_one_class": only})
        log.warning("%s: the model predicts %s everywhere in its %d images, so its %s %.4f is a constant "
                    "prediction's: it learnt nothing it shows in inference mode (too few steps, or batch norm "
                    "statistics that lag the weights: model.bn_momentum)", prefix, only, report.count,
                    report.headline, report.value)  # fmt: skip


def test_and_log(
    model: keras.Model,
    task: Task,
    samples,
    classes: list[str],
    batch_size: int,
    num_examples: int,
    ignore_label: int | None = None,
    tta="none",
    **read,
) -> tuple[float, float | None]:
    """Scores the test split (Samples, streamed batch by batch), logs test_* metrics (the headline with its
    bootstrap interval) and pictures; returns the headline metric (to report, never to select by) and the same
    averaged over the views `tta` names (pipeline.tasks.tta), or None without views. The views' scores are
    logged as test_tta_* beside: test_* stays the model's own score (what the exported model gives) and the
    headline tag."""
    report = evaluate(task, model, samples, classes, batch_size, num_examples=num_examples, ignore_label=ignore_label,
                      desc="scoring test", **read)  # fmt: skip
    log_report(report)
    if (views := tta_mode(tta)) != "none":
        averaged = evaluate(task, model, samples, classes, batch_size, num_examples=0, ignore_label=ignore_label,
                            tta=views, desc=f"scoring test ({views} views)", **read)  # fmt: skip
        log_report(averaged, "test_tta", headline=False)
        tracking.set_tags({"tta": views})
        return report.value, averaged.value
    return report.value, None
