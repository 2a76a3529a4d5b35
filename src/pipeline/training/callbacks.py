"""Keras callbacks that guard a training: a NaN or infinite loss stops it at once with a clear error."""

import math
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
