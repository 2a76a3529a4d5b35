"""The one module that talks to MLflow: runs, params, metrics, artifacts and models.

The default store is a SQLite file at an absolute path in the project root (set in conf/tracking),
so every Hydra job, single or multirun, writes to the same place; MLFLOW_TRACKING_URI overrides it.
"""

import contextlib
import functools
import logging
import math
import random
import shutil
import sqlite3
import tempfile
import time
import traceback
import types
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import keras
import mlflow
import numpy as np
from mlflow.models import Model, infer_signature

from pipeline import provenance
from pipeline.config import project_root
from pipeline.safety import redact_params, redact_text

log = logging.getLogger(__name__)

MAX_PARAM_LENGTH = 500  # MLflow's guaranteed minimum across backends; the full config is also an artifact
DIGEST_LENGTH = 36  # MLflow's dataset digest column holds at most 36 characters


def retry_locked(fn: Callable) -> Callable:
    """Retry a store call that failed with SQLite's "database is locked" (parallel jobs writing one file).

    MLflow already waits 20 s per statement (busy_timeout); this covers what is left, e.g. two
    writers upgrading their locks at once. A failed call rolled back, so calling it again is safe.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        delay = 0.2
        for attempt in range(8):
            try:
                return fn(*args, **kwargs)
            except Exception as err:  # MlflowException or SQLAlchemy's OperationalError, by message
                if "database is locked" not in str(err) or attempt == 7:
                    raise
                log.warning("%s: database is locked, retrying in %.1f s", fn.__name__, delay)
                time.sleep(delay * (1 + random.random()))
                delay *= 2

    return wrapper


def prepare_store(uri: str, experiment: str, artifact_root: str | None) -> str:
    """Before parallel jobs start: create the store and experiment once, and put a SQLite store in
    WAL mode (persistent in the file) so the UI's reads and the jobs' writes do not block each other."""
    mlflow.set_tracking_uri(uri)
    experiment_id = _experiment_id(experiment, artifact_root)  # creates the SQLite tables if needed
    if uri.startswith("sqlite:///"):
        with contextlib.closing(sqlite3.connect(uri.removeprefix("sqlite:///"), timeout=30)) as db:
            db.execute("PRAGMA journal_mode=WAL")
    return experiment_id


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


@retry_locked
def _experiment_id(name: str, artifact_root: str | None) -> str:
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    # against a tracking server the server decides where artifacts go (it proxies them over HTTP)
    remote = mlflow.get_tracking_uri().startswith(("http://", "https://"))
    location = Path(artifact_root, name).resolve().as_uri() if artifact_root and not remote else None
    try:
        return mlflow.create_experiment(name, artifact_location=location)
    except mlflow.exceptions.MlflowException:  # created meanwhile by a parallel job
        return mlflow.get_experiment_by_name(name).experiment_id


@contextlib.contextmanager
def run(
    uri: str,
    experiment: str,
    run_name: str | None = None,
    artifact_root: str | None = None,
    tags: dict | None = None,
    parent_run_id: str | None = None,
    run_id: str | None = None,
) -> Iterator[mlflow.ActiveRun]:
    """Open one MLflow run; it ends FINISHED, or FAILED (KILLED on Ctrl-C) if the body raises.

    With parent_run_id (e.g. the training run an evaluation is about) the run is nested under it.
    With run_id an existing run is reopened (a resumed training) instead of a new one started.
    """
    mlflow.set_tracking_uri(uri)
    if parent_run_id is not None:
        experiment_id = mlflow.get_run(parent_run_id).info.experiment_id
    elif run_id is not None:
        experiment_id = mlflow.get_run(run_id).info.experiment_id
    else:
        experiment_id = _experiment_id(experiment, artifact_root)
    tags = {**provenance.run_tags(project_root()), **(tags or {})}
    active = retry_locked(mlflow.start_run)(
        run_id=run_id, experiment_id=experiment_id, run_name=run_name, tags=tags, parent_run_id=parent_run_id
    )
    log.info("MLflow run %s in experiment '%s' at %s", active.info.run_id, experiment, uri)
    end_run = retry_locked(mlflow.end_run)
    try:
        yield active
    except KeyboardInterrupt:
        end_run("KILLED")
        raise
    except BaseException as err:
        _log_failure(err)
        end_run("FAILED")
        raise
    else:
        end_run("FINISHED")


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
    return {m.step for m in mlflow.MlflowClient().get_metric_history(mlflow.active_run().info.run_id, key)}


def log_figure(figure, artifact_file: str) -> None:
    """Log a matplotlib figure as an image artifact and release its memory."""
    import matplotlib.pyplot as plt

    mlflow.log_figure(figure, artifact_file)
    plt.close(figure)


def _save_keras_model(path: str, **kwargs) -> None:
    Path(path).mkdir(parents=True, exist_ok=True)
    mlflow.keras.save_model(path=path, **kwargs)


# mlflow.keras with one fix: mlflow.keras.save_model writes the input example into the model folder
# before creating it, so mlflow.keras.log_model(..., input_example=...) fails with FileNotFoundError
# (mlflow/mlflow#16183, still so in 3.17.2). Model.log takes any object with save_model as the flavor.
_KERAS_FLAVOR = types.SimpleNamespace(__name__="mlflow.keras", save_model=_save_keras_model)


def log_keras_model(model: keras.Model, example: np.ndarray, name: str = "model") -> str:
    """Log the model with its input example and a signature inferred from it; returns the model URI.

    Requirements are given explicitly: inferring them would re-import the model in a subprocess.
    """
    example = np.asarray(example, dtype=np.float32)
    signature = infer_signature(example, model.predict(example, verbose=0))
    backend = keras.config.backend()
    backend_module = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}[backend]
    requirements = [f"keras=={keras.__version__}", f"{backend_module}=={__import__(backend_module).__version__}"]
    info = Model.log(
        artifact_path=None,
        name=name,
        flavor=_KERAS_FLAVOR,
        model=model,
        signature=signature,
        input_example=example,
        pip_requirements=requirements,
    )
    return info.model_uri


@retry_locked
def log_dataset(name: str, source: str, split: str, features, targets, checksum: str | None) -> None:
    """Dataset lineage: one split as an MLflow dataset input (schema, shapes, source, digest).

    With a manifest checksum (sha256 of every file of the set) the digest is its start and the tag
    data.checksum holds it whole; without one MLflow hashes the arrays.
    """
    digest = checksum.removeprefix("sha256:")[:DIGEST_LENGTH] if checksum else None
    with warnings.catch_warnings():  # "source can be interpreted in multiple ways": both are the local folder
        warnings.simplefilter("ignore", UserWarning)
        dataset = mlflow.data.from_numpy(
            features, source=source, targets=targets, name=f"{name}-{split}", digest=digest
        )
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


def load_model(source: str, uri: str) -> tuple[keras.Model, str | None]:
    """A Keras model and the id of the run that produced it, from any of:

    a `.keras` file path; `runs:/<run id>/<path>`, `models:/<name or model id>/...` or a logged
    model id `m-...`; or a bare run id of this pipeline (its logged model is used). Files are loaded
    with Keras safe_mode, which refuses to run code stored in a model file.
    """
    import pipeline.losses  # noqa: F401 - registers the custom classes a saved model may name
    import pipeline.models  # noqa: F401
    from pipeline.errors import DataError

    mlflow.set_tracking_uri(uri)
    path = Path(source)
    if source.endswith(".keras") or path.is_file():
        if not path.is_file():
            raise DataError(f"{source}: model file not found")
        try:
            return keras.models.load_model(path, safe_mode=True), None
        except (ValueError, OSError) as err:
            if "safe_mode" in str(err):  # Keras refuses to deserialize code (a Lambda layer's function)
                raise DataError(
                    f"{source}: refused to load: the model file holds Python code (e.g. a Lambda layer), which "
                    "safe_mode never runs; valid: models built from Keras layers and this project's registered layers"
                ) from None
            raise DataError(f"{source}: not a loadable .keras model ({err})") from None
    try:
        if source.startswith("m-"):
            source = f"models:/{source}"
        if source.startswith(("runs:/", "models:/")):
            model_uri, run_id = source, None
            if source.startswith("runs:/"):
                run_id = source.split("/")[1]
            else:
                run_id = mlflow.get_logged_model(source.split("/")[1]).source_run_id
        else:
            run = mlflow.get_run(source)
            logged = mlflow.search_logged_models(
                experiment_ids=[run.info.experiment_id],
                filter_string=f"source_run_id = '{source}'",
                output_format="list",
            )
            if not logged:
                raise DataError(f"run {source} logged no model (was it trained with tracking.log_model=false?)")
            model_uri, run_id = logged[0].model_uri, source
        return mlflow.keras.load_model(model_uri), run_id
    except mlflow.exceptions.MlflowException as err:
        message = str(err).splitlines()[0]
        raise DataError(
            f"source={source!r}: not found in the MLflow store at {uri} ({message}); valid: a run id, "
            "runs:/<run id>/model, models:/<model id>, m-<model id>, or a path to a .keras file"
        ) from None


def load_run_config(run_id: str) -> dict | None:
    """The resolved config a run of this pipeline logged (config/resolved.yaml), or None."""
    import yaml

    try:
        return yaml.safe_load(mlflow.artifacts.load_text(f"runs:/{run_id}/config/resolved.yaml"))
    except (mlflow.exceptions.MlflowException, OSError):  # not a run of this pipeline: use the stage config
        return None


def last_run_metric(uri: str, experiment: str, key: str) -> list[float]:
    """The values of metric `key`, in step order, of the newest run of `experiment` in the store at `uri`."""
    [newest] = find_runs(uri, experiment_ids(uri, experiment), max_results=1)
    return metric_history(uri, newest["run_id"], key)[1]


def runs_table(uri: str, experiment: str):
    """All runs of `experiment` in the store at `uri`, newest first, as a pandas DataFrame (empty if none)."""
    mlflow.set_tracking_uri(uri)
    return mlflow.search_runs(experiment_names=[experiment], order_by=["attributes.start_time DESC"])


def download_artifact(uri: str, run_id: str, path: str) -> str:
    """A local copy of one artifact of a run; returns its path."""
    mlflow.set_tracking_uri(uri)
    return mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path)


def metric_history(uri: str, run_id: str, key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of metric `key` of a run, in step order."""
    history = sorted(mlflow.MlflowClient(uri).get_metric_history(run_id, key), key=lambda m: m.step)
    return [m.step for m in history], [m.value for m in history]


# --- Sweeps: a parent run made outside any job, and queries for leaderboards ---------------------------


@retry_locked
def start_parent_run(uri: str, experiment_id: str, run_name: str, tags: Mapping[str, str]) -> str:
    """A RUNNING run that is not the active one: the sweep's jobs (other processes) nest under its id."""
    return mlflow.MlflowClient(uri).create_run(experiment_id, run_name=run_name, tags=dict(tags)).info.run_id


@retry_locked
def finish_parent_run(
    uri: str, run_id: str, status: str, tags: Mapping[str, str], metrics: Mapping[str, float], files: list[Path]
) -> None:
    client = mlflow.MlflowClient(uri)
    for key, value in tags.items():
        client.set_tag(run_id, key, str(value))
    for key, value in metrics.items():
        client.log_metric(run_id, key, float(value))
    for path in files:
        client.log_artifact(run_id, str(path), artifact_path="summary")
    client.set_terminated(run_id, status)


def _as_dict(run) -> dict:
    return {
        "run_id": run.info.run_id,
        "run_name": run.info.run_name,
        "status": run.info.status,
        "start_time": run.info.start_time,
        "experiment_id": run.info.experiment_id,
        "tags": dict(run.data.tags),
        "params": dict(run.data.params),
        "metrics": dict(run.data.metrics),
    }


def find_runs(uri: str, experiment_ids: list[str], filter_string: str = "", max_results: int = 1000) -> list[dict]:
    """Runs as plain dicts (run_id, run_name, status, start_time, experiment_id, tags, params, metrics),
    newest first."""
    client = mlflow.MlflowClient(uri)
    runs = client.search_runs(
        experiment_ids, filter_string, max_results=max_results, order_by=["attributes.start_time DESC"]
    )
    return [_as_dict(r) for r in runs]


def child_runs(uri: str, parent_run_id: str) -> list[dict]:
    experiment_id = mlflow.MlflowClient(uri).get_run(parent_run_id).info.experiment_id
    return find_runs(uri, [experiment_id], f"tags.mlflow.parentRunId = '{parent_run_id}'")


def get_run(uri: str, run_id: str) -> dict | None:
    try:
        return _as_dict(mlflow.MlflowClient(uri).get_run(run_id))
    except mlflow.exceptions.MlflowException:
        return None


def experiment_ids(uri: str, name: str | None = None) -> list[str]:
    """The id of experiment `name` ([] if there is none), or of every experiment when name is None."""
    client = mlflow.MlflowClient(uri)
    if name is None:
        return [e.experiment_id for e in client.search_experiments()]
    experiment = client.get_experiment_by_name(name)
    return [experiment.experiment_id] if experiment else []


def experiment_names(uri: str) -> list[str]:
    return [e.name for e in mlflow.MlflowClient(uri).search_experiments()]


def search_runs(uri: str, experiment: str, tags: Mapping[str, str] | None = None) -> list[dict]:
    """The finished runs of `experiment` whose tags have these values, newest first (dicts as find_runs)."""
    conditions = ["attributes.status = 'FINISHED'"]
    conditions += [f"tags.`{key}` = '{value}'" for key, value in (tags or {}).items()]
    ids = experiment_ids(uri, experiment)
    return find_runs(uri, ids, " and ".join(conditions)) if ids else []


def latest_run_id(uri: str, experiment: str) -> str:
    """The newest finished run of `experiment` (e.g. the source a transfer study starts from)."""
    from pipeline.errors import DataError

    runs = search_runs(uri, experiment)
    if not runs:
        raise DataError(f"latest:{experiment}: no finished run in experiment '{experiment}' at {uri}; train one first")
    return runs[0]["run_id"]


def set_parent(run_ids: list[str], parent_run_id: str) -> None:
    """Nest finished runs under a parent run (e.g. a sweep's summary) in the MLflow UI."""
    client = mlflow.MlflowClient()
    for run_id in run_ids:
        client.set_tag(run_id, "mlflow.parentRunId", parent_run_id)
