"""Training that survives being killed: per-config checkpoints, the MLflow run id, and every epoch's logs.

The folder <paths.output_dir>/resume/<data>-<model>-<config digest>/ holds, while a training runs:
    backup/      weights + optimizer state after the last finished epoch (AtomicBackupAndRestore: never half-written);
                 backup-phase<n>/ for each later phase of a job trained in phases (its own optimizer)
    best.keras   the best epoch so far (ModelCheckpoint)
    state.json   {"run_id": ..., "epochs": {epoch: logs}, "seeds": {epoch: [...]}} - each epoch's logs and
                 the dropout layers' random states (not in Keras' backup), written before the backup
It is derived from the config (not the timestamped Hydra dir), so rerunning the same command with
trainer.resume=true finds it; it is deleted when the run finishes.

Why no metric step is lost or duplicated: at each epoch end the logs go to state.json first, then the
backup is saved, then the metrics go to MLflow. A kill between any two of these leaves MLflow with at
most the backed-up epochs; on resume the backed-up epochs MLflow lacks are replayed from state.json and
training restarts at the first epoch that has no backup (the one that was in flight).
"""

import copy
import hashlib
import json
import logging
import math
import os
import shutil
from pathlib import Path

import keras

from pipeline import tracking
from pipeline.training.callbacks import AtomicBackupAndRestore

log = logging.getLogger(__name__)
NOT_IN_DIGEST = ("resume", "verbose")  # trainer options that do not change what is trained


def resume_dir(config: dict, worker: int = 0) -> Path:
    """The resume folder of a resolved config (a plain dict); each worker of a multi-worker training has its
    own."""
    config = copy.deepcopy(config)
    for key in NOT_IN_DIGEST:
        config["trainer"].pop(key, None)
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:12]
    suffix = f"-worker{worker}" if worker else ""
    name = f"{config['data']['name']}-{config['model']['name']}-{digest}{suffix}"
    return Path(config["paths"]["output_dir"]) / "resume" / name


def _seed_states(model: keras.Model) -> list:
    """The random-number states of the model's dropout (and other random) layers, in a fixed order."""
    return [v for v in model.variables if v.name == "seed_generator_state"]


def _write_json(path: Path, content: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(content))
    os.replace(tmp, path)  # atomic: a kill leaves the old file or the new one, never half of one


class Checkpoints:
    """The resume folder of one training config; `resume=False` starts afresh (discarding an old backup)."""

    def __init__(self, folder: Path, resume: bool):
        self.folder, self.best = folder, folder / "best.keras"
        self.state_path = folder / "state.json"
        state = json.loads(self.state_path.read_text()) if self.state_path.is_file() else {}
        backed_up = self._backed_up()
        if resume and state.get("run_id") and backed_up:
            self.done_epochs = max(backed_up.values())
            self.run_id = state["run_id"]
            # epochs after the backup were in flight when the run died: they are trained again
            self.epochs = {int(e): logs for e, logs in state.get("epochs", {}).items() if int(e) < self.done_epochs}
            self.seeds = {int(e): values for e, values in state.get("seeds", {}).items() if int(e) < self.done_epochs}
            log.info("resuming run %s after epoch %d from %s", self.run_id, self.done_epochs, folder)
        else:
            if folder.exists():
                if state.get("run_id") and not resume:
                    log.warning(
                        "discarding the backup of run %s (trainer.resume=true would continue it)", state["run_id"]
                    )
                shutil.rmtree(folder)
            self.done_epochs, self.run_id, self.epochs, self.seeds = 0, None, {}, {}
        self._restore_seeds = self.done_epochs > 0
        folder.mkdir(parents=True, exist_ok=True)

    def backup(self, phase: int = 0) -> Path:
        """The backup folder of a phase (each phase compiles its own optimizer, so keeps its own backup)."""
        return self.folder / ("backup" if phase == 0 else f"backup-phase{phase}")

    def _backed_up(self) -> dict[int, int]:
        """{phase: epochs done} of every phase with a complete backup."""
        found = {}
        for metadata in self.folder.glob("backup*/training_metadata.json"):
            name = metadata.parent.name
            phase = int(name.removeprefix("backup-phase")) if name != "backup" else 0
            found[phase] = int(json.loads(metadata.read_text())["epoch"])
        return found

    def latest_phase(self) -> int:
        """The last phase with a backup when resuming (0 otherwise): the earlier ones are done."""
        return max(self._backed_up(), default=0) if self.resuming and self.done_epochs else 0

    def restore(self, model: keras.Model, phase: int) -> None:
        """Load phase `phase`'s backup into the model (compiled for that phase): a finished phase's end state."""
        restorer = AtomicBackupAndRestore(str(self.backup(phase)), delete_checkpoint=False)
        restorer.set_model(model)
        restorer._load_model()

    @property
    def resuming(self) -> bool:
        return self.run_id is not None

    def start(self, run_id: str) -> None:
        """Remember the MLflow run; when resuming, log the backed-up epochs it is missing."""
        self.run_id = run_id
        self._save()
        if self.epochs:
            logged = tracking.metric_steps("loss")
            for epoch in sorted(set(self.epochs) - logged):
                tracking.log_metrics(self.epochs[epoch], step=epoch)

    def _save(self) -> None:
        _write_json(self.state_path, {"run_id": self.run_id, "epochs": self.epochs, "seeds": self.seeds})

    def best_so_far(self, monitor: str, mode: str = "max") -> float | None:
        """The best value of `monitor` over the backed-up epochs: the highest (mode max) or lowest (min)."""
        values = [logs[monitor] for logs in self.epochs.values() if math.isfinite(logs.get(monitor, math.nan))]
        return (max if mode == "max" else min)(values) if values else None

    def callbacks(
        self, monitor: str, mode: str = "max", phase: int = 0, best: bool = True, ema: bool = False
    ) -> list[keras.callbacks.Callback]:
        """In this order at each epoch end: record logs, best checkpoint (with `best`), the phase's backup (then
        MetricsCallback). With `ema` (optimizer.use_ema) validation and the best checkpoint see the weights'
        moving average, the backup the raw weights: a pair of swaps around the best checkpoint, through the
        swapper's own public hooks (as around an evaluation), so its record of which weights the model holds stays
        true (its swap_on_epoch would leave the averages in the model for the backup)."""
        checkpoints = self

        class RecordEpoch(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                if checkpoints._restore_seeds:  # dropout continues its random stream where the killed run was
                    checkpoints._restore_seeds = False
                    for variable, value in zip(
                        _seed_states(self.model), checkpoints.seeds[checkpoints.done_epochs - 1]
                    ):
                        variable.assign(value)

            def on_epoch_end(self, epoch, logs=None):
                checkpoints.epochs[epoch] = tracking.epoch_logs(self.model, logs)
                checkpoints.seeds[epoch] = [keras.ops.convert_to_numpy(v).tolist() for v in _seed_states(self.model)]
                checkpoints._save()

        keep = keras.callbacks.ModelCheckpoint(
            self.best,
            monitor=monitor,
            mode=mode,  # val_loss: the lowest epoch is the best
            save_best_only=True,
            initial_value_threshold=self.best_so_far(monitor, mode),
        )
        backup = AtomicBackupAndRestore(str(self.backup(phase)), delete_checkpoint=False)
        if not ema:
            return [RecordEpoch(), *([keep] if best else []), backup]
        swapper = keras.callbacks.SwapEMAWeights()  # validation on the averages
        averages_in = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: swapper.on_test_begin())
        raw_back = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: swapper.on_test_end())
        return [swapper, RecordEpoch(), averages_in, *([keep] if best else []), raw_back, backup]

    def keep_best(self, best_path: Path) -> None:
        """Copy the best model to best_path (the Hydra output dir)."""
        best_path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(self.best, best_path)

    def discard(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def history(self) -> dict[str, list[float]]:
        """Every epoch's logs, the resumed and the earlier ones, as Keras' History.history."""
        epochs = [self.epochs[e] for e in sorted(self.epochs)]
        return {key: [logs.get(key, math.nan) for logs in epochs] for key in (epochs[0] if epochs else {})}
