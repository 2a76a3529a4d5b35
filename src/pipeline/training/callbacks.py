"""Keras callbacks that guard a training: a NaN or infinite loss stops it at once with a clear error; backups
that survive any interruption."""

import json
import math
import os
import time
from pathlib import Path

import keras

from pipeline.errors import TrainingError


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Raise TrainingError at the first batch whose loss is NaN or infinite.

    Raising (rather than keras.callbacks.TerminateOnNaN's stop_training) skips the epoch's end, so
    neither the best checkpoint nor the resume backup is overwritten with the broken weights.
    """

    def __init__(self, configured_lr: float, checkpoints: Path):
        super().__init__()
        self.configured_lr, self.checkpoints, self.epoch = configured_lr, checkpoints, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = float((logs or {}).get("loss", 0.0))
        if math.isfinite(loss):
            return
        rate = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        kept = (
            f"the last good epoch's checkpoints are kept in {self.checkpoints}"
            if (self.checkpoints / "backup").is_dir()
            else "no epoch had finished, so no checkpoint was written"
        )
        raise TrainingError(
            f"loss is {loss} at epoch {self.epoch}, step {batch} (learning rate {rate:.3g} at that step, "
            f"optimizer.lr={self.configured_lr}); training stopped, {kept}; "
            "valid: a smaller optimizer.lr, or check the data for NaN/inf values"
        )


class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
    """Keras' BackupAndRestore with backups that an interruption can never leave half-written, and a resume
    that refuses to go on when it cannot restore everything.

    Each epoch's weights and optimizer state go to a new file (`epoch-<n>.weights.h5`, written under a
    temporary name and renamed: atomic), and only then does training_metadata.json (also renamed into place)
    point to it; older files are removed after. A Ctrl-C or SIGKILL at any moment leaves the metadata pointing
    at the last complete backup. On resume, a backup whose optimizer state did not come back (the
    optimizer would restart with fresh moments and its learning-rate schedule at step 0) stops the run.
    """

    def _metadata_path(self) -> Path:
        return Path(self.backup_dir) / "training_metadata.json"

    def _save_model(self):
        folder = Path(self.backup_dir)
        folder.mkdir(parents=True, exist_ok=True)
        name = f"epoch-{self._current_epoch:04d}.weights.h5"
        incoming = folder / "incoming.weights.h5"  # Keras wants the .weights.h5 suffix
        self.model.save_weights(incoming, overwrite=True)
        os.replace(incoming, folder / name)
        metadata = {"epoch": self._current_epoch, "batch": self._last_batch_seen, "weights": name}
        tmp = folder / "training_metadata.json.tmp"
        tmp.write_text(json.dumps(metadata))
        os.replace(tmp, self._metadata_path())
        for old in folder.glob("epoch-*.weights.h5"):
            if old.name != name:
                old.unlink()

    def on_train_begin(self, logs=None):
        self._load_model()

    def _load_model(self):
        path = self._metadata_path()
        if not path.is_file():
            return
        metadata = json.loads(path.read_text())
        weights = Path(self.backup_dir) / metadata.get("weights", "latest.weights.h5")
        if not weights.is_file():
            raise TrainingError(
                f"resume: {path} names {weights.name}, which is missing; the backup cannot be restored "
                "(valid: run without trainer.resume=true to start afresh)"
            )
        optimizer = self.model.optimizer
        if optimizer is not None and not optimizer.built:
            optimizer.build(self.model.trainable_variables)
        self.model.load_weights(weights)
        epoch = int(metadata["epoch"])
        if optimizer is not None and epoch > 0 and int(keras.ops.convert_to_numpy(optimizer.iterations)) == 0:
            raise TrainingError(
                f"resume: the backup of epoch {epoch} ({weights}) holds no optimizer state, so the optimizer would "
                "restart with fresh moments and its learning-rate schedule at step 0; refusing to continue "
                "(valid: run without trainer.resume=true to start afresh)"
            )
        self.model._initial_epoch = epoch


class CheckMonitor(keras.callbacks.Callback):
    """At the first epoch's end: the metric the best checkpoint, early stopping and sweeps go by is one this run
    logs, else one line naming what it logs (a typo in trainer.monitor costs one epoch, not a run)."""

    def __init__(self, monitor: str):
        super().__init__()
        self.monitor = monitor

    def on_epoch_end(self, epoch, logs=None):
        if logs and self.monitor not in logs:
            from pipeline.errors import ConfigError

            logged = ", ".join(sorted(key for key in logs if key.startswith("val_")))
            raise ConfigError(f"trainer.monitor={self.monitor} is not a metric this run logs; valid: {logged}")


class EarlyStop(keras.callbacks.Callback):
    """Stop after `patience` epochs in which the monitored metric did not improve on its best by more than
    `min_delta` in its direction (trainer.early_stopping). `earlier`: the metric's values in this phase before
    the run was resumed, so a resumed run stops at the epoch an uninterrupted one would."""

    def __init__(self, monitor: str, mode: str, patience: int, min_delta: float = 0.0, earlier: list | None = None):
        super().__init__()
        self.monitor, self.mode, self.patience, self.min_delta = monitor, mode, patience, min_delta
        self.best, self.wait, self.stopped_epoch = None, 0, None
        for value in earlier or []:
            self._see(value)

    def _see(self, value: float) -> None:
        if not math.isfinite(value):
            self.wait += 1
        elif self.best is None or (value > self.best + self.min_delta if self.mode == "max"
                                   else value < self.best - self.min_delta):  # fmt: skip
            self.best, self.wait = value, 0
        else:
            self.wait += 1

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None:
            return  # CheckMonitor names the missing metric
        self._see(float(value))
        if self.wait >= self.patience:
            self.model.stop_training, self.stopped_epoch = True, epoch


class EpochClock(keras.callbacks.Callback):
    """The epochs' wall time in this process, validation included (`spent`), summed over every phase when one
    instance is shared: what trainer.max_time budgets and trainer.stop_at reports."""

    def __init__(self):
        super().__init__()
        self.spent, self.stopped_epoch, self._start = 0.0, None, None

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        self.spent += time.monotonic() - self._start

    @property
    def exhausted(self) -> bool:
        return self.stopped_epoch is not None


class Target(EpochClock):
    """trainer.stop_at: stop after the first epoch whose monitored validation metric reaches `value` in its
    direction, and keep the training time to there (`seconds`): time to target, as MLPerf Training measures it."""

    def __init__(self, monitor: str, mode: str, value: float):
        super().__init__()
        self.monitor, self.mode, self.value, self.seconds = monitor, mode, float(value), None

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        found = (logs or {}).get(self.monitor)
        if found is None or self.stopped_epoch is not None:
            return  # CheckMonitor names a missing metric
        if float(found) >= self.value if self.mode == "max" else float(found) <= self.value:
            self.model.stop_training, self.stopped_epoch, self.seconds = True, epoch, self.spent


class TimeBudget(EpochClock):
    """trainer.max_time: stop after the epoch that reaches `seconds` of training in this process (counted over
    every phase of the run: one instance is shared)."""

    def __init__(self, seconds: float, agree=None):
        super().__init__()
        self.seconds = seconds
        self.agree = agree or bool  # several processes training together stop at the chief's word

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        if self.agree(self.spent >= self.seconds):
            self.model.stop_training, self.stopped_epoch = True, epoch
