"""Keras callbacks that guard a training: a NaN or infinite loss stops it at once with a clear error; backups
that survive any interruption."""

import json
import math
import os
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
