"""Backups that survive any interruption: a Ctrl-C while the epoch-end backup is being written leaves the
last complete one, and a resume that cannot restore the optimizer refuses instead of training on."""

import json

import keras
import numpy as np
import pytest

from pipeline.errors import TrainingError
from pipeline.training.callbacks import AtomicBackupAndRestore

X = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
Y = (X.sum(axis=1) > 0).astype("int32")


def model() -> keras.Model:
    keras.utils.set_random_seed(0)
    net = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(2, activation="softmax")]
    )
    net.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    return net


def test_an_interrupted_backup_leaves_the_last_complete_one(tmp_path):
    net = model()
    backup = AtomicBackupAndRestore(str(tmp_path), delete_checkpoint=False)
    net.fit(X, Y, batch_size=8, epochs=2, verbose=0, callbacks=[backup])  # 4 steps per epoch
    after_two = [w.copy() for w in net.get_weights()]
    real_save = net.save_weights

    def interrupted(path, overwrite=True):  # Ctrl-C lands while the file is being written
        real_save(path, overwrite=overwrite)
        with open(path, "r+b") as handle:
            handle.truncate(100)
        raise KeyboardInterrupt

    net.save_weights = interrupted
    with pytest.raises(KeyboardInterrupt):
        net.fit(X, Y, batch_size=8, epochs=3, initial_epoch=2, verbose=0, callbacks=[backup])
    assert json.loads((tmp_path / "training_metadata.json").read_text())["epoch"] == 2

    resumed = model()
    restore = AtomicBackupAndRestore(str(tmp_path), delete_checkpoint=False)
    restore.set_model(resumed)
    restore.on_train_begin()
    assert resumed._initial_epoch == 2
    assert int(resumed.optimizer.iterations.numpy()) == 8  # the optimizer's step count came back: 2 epochs x 4
    for restored, expected in zip(resumed.get_weights(), after_two):
        np.testing.assert_array_equal(restored, expected)


def test_a_backup_without_optimizer_state_is_refused(tmp_path):
    fresh = model()  # compiled, never trained: its weights file holds no optimizer variables
    fresh.save_weights(tmp_path / "epoch-0003.weights.h5")
    (tmp_path / "training_metadata.json").write_text(
        json.dumps({"epoch": 3, "batch": 0, "weights": "epoch-0003.weights.h5"})
    )
    restore = AtomicBackupAndRestore(str(tmp_path))
    restore.set_model(model())
    with pytest.raises(TrainingError, match="holds no optimizer state"):
        restore.on_train_begin()
