"""Writing one run: open it (ending FINISHED, FAILED or KILLED), params, tags, metrics, artifacts, datasets."""

import contextlib
import logging
import math
import shutil
import tempfile
import traceback
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path

import keras
import mlflow

from pipeline.config import PACKAGE_DIR, checkout
from pipeline.safety import redact_params, redact_text
from pipeline.tracking import provenance
from pipeline.tracking.store import check_reachable, client, ensure_experiment, retry_locked, use_store

log = logging.getLogger(__name__)
logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)  # its start, stop and "no GPU" lines

MAX_PARAM_LENGTH = 500  # MLflow's guaranteed minimum across backends; the full config is also an artifact
DIGEST_LENGTH = 36  # MLflow's dataset digest column holds at most 36 characters


def flatten(config: Mapping, prefix: str = "") -> dict[str, str]:
    """{'a': {'b': 1}, 'c': [1, 2]} -> {'a.b': '1', 'c': '[1, 2]'}; long values are truncated."""
    flat = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, prefix=f"{name}."))
        else:
            text = str(value)
            flat[name] = text if len(text) <= MAX_PARAM_LENGTH else text[: MAX_PARAM_LENGTH - 3] + "..."
    return flat


@contextlib.contextmanager
def run(
    uri: str,
    experiment: str,
    run_name: str | None = None,
    artifact_root: str | None = None,
    tags: dict | None = None,
    parent_run_id: str | None = None,
    run_id: str | None = None,
    system_metrics: float | None = None,
) -> Iterator[mlflow.ActiveRun]:
    """Open one MLflow run; it ends FINISHED, or FAILED (KILLED on Ctrl-C) if the body raises.

    With parent_run_id (e.g. the training run an evaluation is about) the run is nested under it.
    With run_id an existing run is reopened (a resumed training) instead of a new one started.
    With system_metrics (seconds) MLflow samples CPU, memory, disk, network and GPUs into system/* metrics.
    """
    check_reachable(uri)
    use_store(uri)  # the fluent API below logs into the active run of this store
    if parent_run_id is not None or run_id is not None:  # nested or reopened: the run's own experiment
        experiment_id = client(uri).get_run(parent_run_id or run_id).info.experiment_id
    else:
        experiment_id = ensure_experiment(experiment, artifact_root)
    # tag values are strings in every store (SQLite would keep an int; a tracking server's REST API refuses it)
    tags = {
        key: str(value) for key, value in {**provenance.run_tags(checkout() or PACKAGE_DIR), **(tags or {})}.items()
    }
    if system_metrics:
        mlflow.set_system_metrics_sampling_interval(system_metrics)
        mlflow.set_system_metrics_samples_before_logging(1)  # each sample logged as taken: a kill loses none
    active = retry_locked(mlflow.start_run)(
        run_id=run_id, experiment_id=experiment_id, run_name=run_name, tags=tags, parent_run_id=parent_run_id,
        log_system_metrics=bool(system_metrics),
    )  # fmt: skip
    where = client(uri).get_experiment(experiment_id).name
    nested = f", nested under run {parent_run_id}" if parent_run_id else ""
    log.info("MLflow run %s in experiment '%s'%s at %s", active.info.run_id, where, nested, uri)
    link = ui_link(uri, experiment_id, active.info.run_id)
    log.info("view it at %s", link)
    end_run = retry_locked(mlflow.end_run)
    try:
        yield active
    except Stopped as stop:
        set_tags({"stopped": stop.reason})
        end_run(stop.status)
        raise
    except KeyboardInterrupt:
        end_run("KILLED")
        raise
    except BaseException as err:
        _log_failure(err)
        end_run("FAILED")
        raise
    else:
        end_run("FINISHED")
        log.info("run %s FINISHED: %s (cnn ui to browse a local store)", active.info.run_id, link)


class Stopped(Exception):  # noqa: N818 - not an error: a run ended on purpose before its end
    """Raised inside `run` to end it with `status` (KILLED for a pruned trial), not FAILED, and say why."""

    def __init__(self, status: str, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason


def _log_failure(err: BaseException) -> None:
    """The error as a tag (one line) and its traceback as the artifact error/traceback.txt."""
    try:
        set_tags({"error": f"{type(err).__name__}: {err}"[:1000]})
        mlflow.log_text(traceback.format_exc(), "error/traceback.txt")
    except Exception as logging_error:  # the original error matters more than this one
        log.warning("could not log the failure to MLflow: %s", logging_error)


@retry_locked
def log_params(config: Mapping) -> None:
    mlflow.log_params(redact_params(flatten(config)))


@retry_locked
def set_tags(tags: Mapping[str, object]) -> None:
    mlflow.set_tags({k: str(v) for k, v in tags.items()})


@retry_locked
def log_metrics(metrics: Mapping[str, float], step: int | None = None) -> None:
    """Log finite metrics; NaN (an undefined score, e.g. the IoU of an absent class) is skipped."""
    finite = {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}
    mlflow.log_metrics(finite, step=step)


def log_dir(path: str | Path, artifact_path: str | None = None) -> None:
    """Log a folder; its text files (e.g. Hydra's .hydra/ config and overrides) with secrets redacted."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(shutil.copytree(path, Path(tmp) / "dir"))
        for file in (f for f in copy.rglob("*") if f.is_file() and f.suffix in (".yaml", ".yml", ".json", ".txt")):
            file.write_text(redact_text(file.read_text()))
        mlflow.log_artifacts(str(copy), artifact_path=artifact_path)


def log_artifact(path: str | Path, artifact_path: str | None = None) -> None:
    mlflow.log_artifact(str(path), artifact_path=artifact_path)


def log_text(text: str, artifact_file: str) -> None:
    mlflow.log_text(redact_text(text), artifact_file)


def metric_steps(key: str) -> set[int]:
    """The steps at which the active run has logged `key` (a resumed training logs only the missing ones)."""
    history = client(mlflow.get_tracking_uri()).get_metric_history(mlflow.active_run().info.run_id, key)
    return {m.step for m in history}


def active_run_datasets() -> tuple[str, dict[str, str]]:
    """The active run's id and its dataset inputs' digests by name ({"shapes-train": "3f2a..."})."""
    run = client(mlflow.get_tracking_uri()).get_run(mlflow.active_run().info.run_id)
    return run.info.run_id, {item.dataset.name: item.dataset.digest for item in run.inputs.dataset_inputs}


def ui_link(uri: str, experiment_id: str, run_id: str) -> str:
    """The run's page in the MLflow UI: on the tracking server itself, or (a local store) in `cnn ui`."""
    base = uri.rstrip("/") if uri.startswith(("http://", "https://")) else "http://127.0.0.1:5000"
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"


def log_figure(figure, artifact_file: str) -> None:
    """Log a matplotlib figure as an image artifact and release its memory."""
    import matplotlib.pyplot as plt

    mlflow.log_figure(figure, artifact_file)
    plt.close(figure)


@retry_locked
def log_dataset(
    name: str, source: str, split: str, samples, checksum: str | None, run_id: str | None = None, uri: str | None = None
) -> None:
    """Dataset lineage: one split (a pipeline.data.samples.Samples) as an MLflow dataset input.

    A split in memory is logged as its arrays (schema, shapes); a streamed one as its index (file, target),
    so lineage never decodes a set that does not fit in memory. With a manifest checksum (sha256 of every
    file of the set) the digest is its start and the tag data.checksum holds it whole; without one MLflow
    hashes the arrays or the index. With run_id (and uri), it is logged to that run rather than the active one.
    """
    import numpy as np
    import pandas as pd

    digest = checksum.removeprefix("sha256:")[:DIGEST_LENGTH] if checksum else None
    with warnings.catch_warnings():  # "source can be interpreted in multiple ways": both are the local folder
        warnings.simplefilter("ignore", UserWarning)
        if hasattr(samples, "items"):  # streamed from its files
            index = pd.DataFrame({"file": [str(path) for path, _ in samples.items],
                                  "target": [str(target) for _, target in samples.items]})  # fmt: skip
            dataset = mlflow.data.from_pandas(index, source=source, name=f"{name}-{split}", digest=digest)
        else:
            images, targets = samples.arrays()
            dataset = mlflow.data.from_numpy(
                np.asarray(images), source=source, targets=targets, name=f"{name}-{split}", digest=digest
            )
    if run_id is not None:
        from mlflow.entities import DatasetInput, InputTag

        context = InputTag(key="mlflow.data.context", value=split)
        client(uri).log_inputs(run_id, datasets=[DatasetInput(dataset._to_mlflow_entity(), tags=[context])])
        if checksum:
            client(uri).set_tag(run_id, "data.checksum", checksum)
        return
    mlflow.log_input(dataset, context=split)
    if checksum:
        mlflow.set_tag("data.checksum", checksum)


class MetricsCallback(keras.callbacks.Callback):
    """Log every epoch's Keras logs (loss, val_loss, mean_iou, ...) with the epoch as the step."""

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        log_metrics(epoch_logs(self.model, logs), step=epoch)


def epoch_logs(model: keras.Model, logs: dict | None) -> dict[str, float]:
    """An epoch's Keras logs as plain floats, with the optimizer's current learning rate."""
    logs = {key: float(value) for key, value in (logs or {}).items()}
    lr = getattr(model.optimizer, "learning_rate", None)
    if lr is not None:
        logs.setdefault("learning_rate", float(keras.ops.convert_to_numpy(lr)))
    return logs
