"""Optuna studies for sweeps: where a study lives, how a job finds its trial, and pruning from a Keras callback.

The sweeper (src/hydra_plugins/pipeline_sweepers, `sweep=optuna`) asks the study for trials and launches one
Hydra job per trial, with the job number equal to the trial number, and writes where the study lives into the
sweep folder (STUDY_FILE). A job reads it back (`job_trial`, given the job's JobPlace) to report each epoch's
validation metric to its trial; when the study's pruner says so, training stops and the run ends KILLED with the tag
`pruned=true` (`Pruned`), which the sweeper tells the study.

The study is persistent: by default an SQLite file beside the MLflow store (`sqlite:///.../optuna.db`
beside `sqlite:///.../mlflow.db`), or in the sweep folder when MLflow is a server; any SQLAlchemy URL
(`hydra.sweeper.storage=postgresql://...`) otherwise. Its name is the sweep folder's, so starting a
sweep again on its folder continues the same study.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import keras

from pipeline.config import instantiate
from pipeline.config.spec import JobPlace
from pipeline.errors import ConfigError

log = logging.getLogger(__name__)
STUDY_FILE = "optuna_study.json"


class Pruned(float):
    """A job's return value when its trial was pruned: the last reported value, marked for the sweeper."""

    pruned = True

    def __new__(cls, value: float, epoch: int):
        number = super().__new__(cls, value)
        number.epoch = epoch
        return number

    def __reduce__(self):  # joblib and submitit pickle the return value back to the sweeper
        return Pruned, (float(self), self.epoch)


def default_storage(tracking_uri: str, sweep_dir: Path) -> str:
    """SQLite beside an SQLite MLflow store, else a file in the sweep folder."""
    if tracking_uri.startswith("sqlite:///"):
        return str(tracking_uri).rsplit("/", 1)[0] + "/optuna.db"
    return f"sqlite:///{Path(sweep_dir).resolve()}/optuna.db"


def default_study_name(sweep_dir: Path, output_root: Path) -> str:
    """The sweep folder, relative to the outputs when it is under them: multirun/2026-11-27/15-30-00."""
    folder = Path(sweep_dir).resolve()
    try:
        return str(folder.relative_to(Path(output_root).resolve()))
    except ValueError:
        return str(folder)


def open_storage(url: str):
    """The study storage, reached now: an unreachable database is one line before any training."""
    import optuna
    import sqlalchemy

    try:
        return optuna.storages.RDBStorage(url, heartbeat_interval=None)
    except (sqlalchemy.exc.SQLAlchemyError, ImportError, ValueError) as err:
        reason = str(err).splitlines()[0][:200]
        raise ConfigError(f"hydra.sweeper.storage={url}: cannot open the Optuna study database ({reason})") from None


def write_study_record(sweep_dir: Path, storage: str, study_name: str, pruner: dict | None) -> None:
    """Where the study lives and its pruner's config: a study's pruner is not stored with it, so each job
    builds the sweep's own (optuna.load_study alone would prune by its default, the median)."""
    record = {"storage": storage, "study_name": study_name, "pruner": pruner}
    (Path(sweep_dir) / STUDY_FILE).write_text(json.dumps(record) + "\n")


def job_trial(place: JobPlace):
    """In a job of an Optuna sweep, its trial (trial number = the job's number); None otherwise."""
    path = place.sweep_dir / STUDY_FILE if place.sweep_dir else None
    if path is None or not path.is_file():
        return None
    import optuna

    record = json.loads(path.read_text())
    pruner = instantiate(record["pruner"]) if record.get("pruner") else optuna.pruners.NopPruner()
    study = optuna.load_study(study_name=record["study_name"], storage=open_storage(record["storage"]), pruner=pruner)
    number = int(place.number)
    # Optuna has no public lookup by number across processes: its storage's, as Optuna's own integrations use
    trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number)
    return optuna.trial.Trial(study, trial_id)


class PruningCallback(keras.callbacks.Callback):
    """Reports `monitor` to the trial after each epoch; stops training when the study's pruner says so."""

    def __init__(self, trial, monitor: str, mode: str):
        super().__init__()
        self.trial, self.monitor = trial, monitor
        maximize = trial.study.direction.name == "MAXIMIZE"
        self.sign = 1.0 if (mode == "max") == maximize else -1.0  # the study's direction, whatever the metric's
        self.pruned: Pruned | None = None

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        value = (logs or {}).get(self.monitor)
        if value is None or not math.isfinite(float(value)):
            return
        self.trial.report(self.sign * float(value), epoch)
        if self.trial.should_prune():
            self.pruned = Pruned(float(value), epoch)
            log.info("trial %d pruned after epoch %d (%s %.4f)", self.trial.number, epoch + 1, self.monitor, value)
            self.model.stop_training = True


def pruning_callbacks(monitor: str, mode: str, place: JobPlace) -> list[PruningCallback]:
    """[the job's PruningCallback] in a job of an Optuna sweep; [] otherwise."""
    trial = job_trial(place)
    return [PruningCallback(trial, monitor, mode)] if trial is not None else []
