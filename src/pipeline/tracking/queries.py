"""Reading the store: runs as plain dicts, metric histories, artifacts; and sweep parent runs, made outside
any job. Every query names its store URI and goes through that store's one client."""

import contextlib
from collections.abc import Mapping
from pathlib import Path

import mlflow

from pipeline.tracking.store import client, quiet_downloads, retry_locked, use_store


def last_run_metric(uri: str, experiment: str, key: str) -> list[float]:
    """The values of metric `key`, in step order, of the newest run of `experiment` in the store at `uri`."""
    [newest] = find_runs(uri, experiment_ids(uri, experiment), max_results=1)
    return metric_history(uri, newest["run_id"], key)[1]


def runs_table(uri: str, experiment: str):
    """All runs of `experiment` in the store at `uri`, newest first, as a pandas DataFrame (empty if none)."""
    ids = experiment_ids(uri, experiment)
    if not ids:
        import pandas as pd

        return pd.DataFrame()
    with _store(uri):  # mlflow.search_runs (the DataFrame form) reads the global tracking URI only
        return mlflow.search_runs(experiment_ids=ids, order_by=["attributes.start_time DESC"])


@contextlib.contextmanager
def _store(uri: str):
    previous = mlflow.get_tracking_uri()
    use_store(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)


def download_artifact(uri: str, run_id: str, path: str) -> str:
    """A local copy of one artifact of a run; returns its path."""
    with quiet_downloads():
        return mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, tracking_uri=uri)


def metric_history(uri: str, run_id: str, key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of metric `key` of a run, in step order."""
    history = sorted(client(uri).get_metric_history(run_id, key), key=lambda m: m.step)
    return [m.step for m in history], [m.value for m in history]


# --- Sweeps: a parent run made outside any job, and queries for leaderboards ---------------------------


@retry_locked
def start_parent_run(uri: str, experiment_id: str, run_name: str, tags: Mapping[str, str]) -> str:
    """A RUNNING run that is not the active one: the sweep's jobs (other processes) nest under its id."""
    return client(uri).create_run(experiment_id, run_name=run_name, tags=dict(tags)).info.run_id


@retry_locked
def finish_parent_run(
    uri: str, run_id: str, status: str, tags: Mapping[str, str], metrics: Mapping[str, float], files: list[Path]
) -> None:
    store = client(uri)
    for key, value in tags.items():
        store.set_tag(run_id, key, str(value))
    for key, value in metrics.items():
        store.log_metric(run_id, key, float(value))
    for path in files:
        store.log_artifact(run_id, str(path), artifact_path="summary")
    store.set_terminated(run_id, status)


def annotate_run(
    uri: str, run_id: str, tags: Mapping[str, str], metrics: Mapping[str, float], texts: Mapping[str, str], figures
) -> None:
    """Tags, metrics, text artifacts {path: text} and figures {path: figure} added to an existing run, whatever
    its status (a finished sweep's parent gains its study's table), which stays as it was."""
    store = client(uri)
    for key, value in tags.items():
        store.set_tag(run_id, key, str(value))
    for key, value in metrics.items():
        store.log_metric(run_id, key, float(value))
    for path, text in texts.items():
        store.log_text(run_id, text, path)
    for path, figure in figures.items():
        store.log_figure(run_id, figure, path)


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
    runs = client(uri).search_runs(
        experiment_ids, filter_string, max_results=max_results, order_by=["attributes.start_time DESC"]
    )
    return [_as_dict(r) for r in runs]


def child_runs(uri: str, parent_run_id: str) -> list[dict]:
    experiment_id = client(uri).get_run(parent_run_id).info.experiment_id
    return find_runs(uri, [experiment_id], f"tags.mlflow.parentRunId = '{parent_run_id}'")


def get_run(uri: str, run_id: str) -> dict | None:
    try:
        return _as_dict(client(uri).get_run(run_id))
    except mlflow.exceptions.MlflowException:
        return None


def experiment_ids(uri: str, name: str | None = None) -> list[str]:
    """The id of experiment `name` ([] if there is none), or of every experiment when name is None."""
    store = client(uri)
    if name is None:
        return [e.experiment_id for e in store.search_experiments()]
    experiment = store.get_experiment_by_name(name)
    return [experiment.experiment_id] if experiment else []


def experiment_names(uri: str) -> list[str]:
    return [e.name for e in client(uri).search_experiments()]


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


def set_parent(uri: str, run_ids: list[str], parent_run_id: str) -> None:
    """Nest finished runs under a parent run (e.g. a sweep's summary) in the MLflow UI."""
    for run_id in run_ids:
        client(uri).set_tag(run_id, "mlflow.parentRunId", parent_run_id)
