"""The one module that talks to MLflow: runs, params, metrics, artifacts and models.

The default store is a SQLite file at an absolute path in the project root (set in conf/tracking),
so every Hydra job, single or multirun, writes to the same place; MLFLOW_TRACKING_URI overrides it.
"""

import contextlib
import logging
import math
from collections.abc import Iterator, Mapping
from pathlib import Path

import keras
import mlflow
import numpy as np
from mlflow.models import infer_signature

log = logging.getLogger(__name__)

MAX_PARAM_LENGTH = 500  # MLflow's guaranteed minimum across backends; the full config is also an artifact


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


def _experiment_id(name: str, artifact_root: str | None) -> str:
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = Path(artifact_root, name).resolve().as_uri() if artifact_root else None
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
) -> Iterator[mlflow.ActiveRun]:
    """Open one MLflow run; it ends FINISHED, or FAILED (KILLED on Ctrl-C) if the body raises.

    With parent_run_id (e.g. the training run an evaluation is about) the run is nested under it.
    """
    mlflow.set_tracking_uri(uri)
    experiment_id = _experiment_id(experiment, artifact_root)
    if parent_run_id is not None:
        experiment_id = mlflow.get_run(parent_run_id).info.experiment_id
    active = mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags, parent_run_id=parent_run_id)
    log.info("MLflow run %s in experiment '%s' at %s", active.info.run_id, experiment, uri)
    try:
        yield active
    except KeyboardInterrupt:
        mlflow.end_run("KILLED")
        raise
    except BaseException:
        mlflow.end_run("FAILED")
        raise
    else:
        mlflow.end_run("FINISHED")


def log_params(config: Mapping) -> None:
    mlflow.log_params(flatten(config))


def log_metrics(metrics: Mapping[str, float], step: int | None = None) -> None:
    """Log finite metrics; NaN (an undefined score, e.g. the IoU of an absent class) is skipped."""
    finite = {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}
    mlflow.log_metrics(finite, step=step)


def log_dir(path: str | Path, artifact_path: str | None = None) -> None:
    mlflow.log_artifacts(str(path), artifact_path=artifact_path)


def log_artifact(path: str | Path, artifact_path: str | None = None) -> None:
    mlflow.log_artifact(str(path), artifact_path=artifact_path)


def log_text(text: str, artifact_file: str) -> None:
    mlflow.log_text(text, artifact_file)


def log_figure(figure, artifact_file: str) -> None:
    """Log a matplotlib figure as an image artifact and release its memory."""
    import matplotlib.pyplot as plt

    mlflow.log_figure(figure, artifact_file)
    plt.close(figure)


def log_keras_model(model: keras.Model, example: np.ndarray, name: str = "model") -> str:
    """Log the model with a signature inferred from `example`; returns the model URI.

    Requirements are given explicitly: inferring them would re-import the model in a subprocess.
    No input_example: mlflow.keras.log_model crashes writing it (mlflow/mlflow#16183, open).
    """
    signature = infer_signature(example, model.predict(example, verbose=0))
    backend = keras.config.backend()
    backend_module = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}[backend]
    requirements = [f"keras=={keras.__version__}", f"{backend_module}=={__import__(backend_module).__version__}"]
    info = mlflow.keras.log_model(model, name=name, signature=signature, pip_requirements=requirements)
    return info.model_uri


class MetricsCallback(keras.callbacks.Callback):
    """Log every epoch's Keras logs (loss, val_loss, mean_iou, ...) with the epoch as the step."""

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = dict(logs or {})
        lr = getattr(self.model.optimizer, "learning_rate", None)
        if lr is not None:
            logs.setdefault("learning_rate", float(keras.ops.convert_to_numpy(lr)))
        log_metrics(logs, step=epoch)


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


def search_runs(uri: str, experiment: str, tags: Mapping[str, str] | None = None) -> list[dict]:
    """The finished runs of `experiment` whose tags have these values, newest first, as plain dicts
    with run_id, tags, params and metrics (no MLflow objects leave this module)."""
    mlflow.set_tracking_uri(uri)
    found = mlflow.get_experiment_by_name(experiment)
    if found is None:
        return []
    conditions = ["attributes.status = 'FINISHED'"]
    conditions += [f"tags.`{key}` = '{value}'" for key, value in (tags or {}).items()]
    runs = mlflow.search_runs(
        [found.experiment_id],
        filter_string=" and ".join(conditions),
        order_by=["attributes.start_time DESC"],
        output_format="list",
    )
    return [
        {"run_id": r.info.run_id, "tags": r.data.tags, "params": r.data.params, "metrics": r.data.metrics} for r in runs
    ]


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
