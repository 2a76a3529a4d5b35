"""The store: one MlflowClient per tracking URI, SQLite's busy retries, and creating experiments once."""

import contextlib
import functools
import logging
import os
import random
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import mlflow

log = logging.getLogger(__name__)


@functools.cache
def client(uri: str) -> mlflow.MlflowClient:
    """The one client of the store at `uri` (queries never depend on a global tracking URI), the store
    opened (created and migrated if new) under open_store's lock."""
    open_store(uri)
    return mlflow.MlflowClient(uri)


@functools.cache
def open_store(uri: str) -> None:
    """Open the store at `uri` once per process. A new SQLite file is created and migrated by MLflow's first
    opener; several processes opening it at the same instant would all migrate it (`duplicate column name`,
    `Online migration expected to match one row`), so openers take an exclusive lock on `<file>.lock` in
    turn: the first creates and migrates it, the others wait and then find it ready. MLflow caches the
    opened store per process, so later opens (the fluent API's included) reuse it."""
    if not uri.startswith("sqlite:///"):
        return
    import fcntl

    path = Path(uri.removeprefix("sqlite:///"))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        try:
            mlflow.MlflowClient(uri).search_experiments(max_results=1)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


# what parallel writers of one store can meet, and a second try resolves: SQLite's single writer, and two
# jobs inserting the same dataset row at once (SQLite's and PostgreSQL's unique-constraint messages): the
# loser's transaction rolled back, and on its second try it finds the row the winner inserted
RACES = ("database is locked", "UNIQUE constraint failed", "duplicate key value violates unique constraint")


def retry_locked(fn: Callable) -> Callable:
    """Retry a store call that lost a race with a parallel writer (RACES).

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
                race = next((race for race in RACES if race in str(err)), None)
                if race is None or attempt == 7:
                    raise
                log.warning("%s: %s (a parallel writer), retrying in %.1f s", fn.__name__, race, delay)
                time.sleep(delay * (1 + random.random()))
                delay *= 2

    return wrapper


def use_store(uri: str) -> None:
    """mlflow.set_tracking_uri, the store opened first (open_store): the fluent API logs into it."""
    open_store(uri)
    mlflow.set_tracking_uri(uri)


@functools.cache
def check_reachable(uri: str) -> None:
    """A tracking server that does not answer is one line now, not minutes of MLflow's HTTP retries later."""
    if not uri.startswith(("http://", "https://")):
        return
    import urllib.error
    import urllib.request

    from pipeline.errors import ConfigError

    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=10) as answer:
            answer.read()
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise ConfigError(
            f"tracking.uri={uri}: no MLflow server answers there ({reason}); start one "
            "(mlflow server --backend-store-uri ...) or unset MLFLOW_TRACKING_URI for the local SQLite store"
        ) from None


def prepare_store(uri: str, experiment: str, artifact_root: str | None) -> str:
    """Before parallel jobs start: create the store and experiment once, and put a SQLite store in
    WAL mode (persistent in the file) so the UI's reads and the jobs' writes do not block each other."""
    check_reachable(uri)
    use_store(uri)
    experiment_id = ensure_experiment(experiment, artifact_root)  # creates the SQLite tables if needed
    if uri.startswith("sqlite:///"):
        with contextlib.closing(sqlite3.connect(uri.removeprefix("sqlite:///"), timeout=30)) as db:
            db.execute("PRAGMA journal_mode=WAL")
    return experiment_id


@retry_locked
def ensure_experiment(name: str, artifact_root: str | None) -> str:
    """The id of experiment `name` in the current store, created (with its artifact location) if new."""
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
def quiet_downloads():
    """MLflow draws a progress bar for every artifact it downloads, even a one-line file: none inside this block."""
    name = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    before = os.environ.get(name)
    os.environ[name] = "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before
