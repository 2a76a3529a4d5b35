"""Training recipes as config (trainer.early_stopping, trainer.max_time, trainer.steps_per_execution,
optimizer.use_ema, optimizer.gradient_accumulation_steps, loss.label_smoothing): each against a reference it
could fail, a hand-worked epoch, a hand-computed average or loss, or the same step taken another way."""

import math
import re

import keras
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from helpers import TINY, find_runs, run_here
from pipeline.config import compose
from pipeline.config.schema import check_schema
from pipeline.errors import ConfigError
from pipeline.tasks import get_task
from pipeline.training.callbacks import CheckMonitor, EarlyStop, Target
from pipeline.training.losses import SmoothedSparseCrossentropy
from pipeline.training.resume import Checkpoints
from pipeline.training.runtime import build_optimizer

X = np.random.default_rng(0).normal(size=(16, 3)).astype(np.float32)
Y = (X @ np.array([1.0, -2.0, 0.5], np.float32))[:, None]


def dense(seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((3,))
    return keras.Model(inputs, keras.layers.Dense(1)(inputs))


def test_early_stopping_stops_after_patience_epochs_of_a_plateau():
    """lr 0: val_loss is the same every epoch, so epoch 1 sets the best and patience 2 stops after epoch 3."""
    model = dense()
    model.compile(keras.optimizers.SGD(0.0), "mse")
    stop = EarlyStop("val_loss", "min", patience=2)
    history = model.fit(X, Y, validation_data=(X, Y), epochs=10, verbose=0, callbacks=[stop])
    assert len(history.history["val_loss"]) == 3 and stop.stopped_epoch == 2


def test_a_resumed_run_counts_the_epochs_before_it():
    """Patience 3 with two flat epochs already recorded: one more flat epoch stops it, as it would have."""
    model = dense()
    model.compile(keras.optimizers.SGD(0.0), "mse")
    flat = float(model.evaluate(X, Y, verbose=0))
    stop = EarlyStop("val_loss", "min", patience=3, earlier=[flat, flat])
    history = model.fit(X, Y, validation_data=(X, Y), epochs=10, verbose=0, callbacks=[stop])
    assert len(history.history["val_loss"]) == 2  # epoch 1 improves nothing (wait 2), epoch 2 makes 3


def test_a_monitor_the_run_does_not_log_is_one_line_naming_what_it_logs():
    model = dense()
    model.compile(keras.optimizers.SGD(0.01), "mse", metrics=["mae"])
    with pytest.raises(ConfigError, match=r"trainer.monitor=val_acc is not a metric this run logs; valid: "
                                          r"val_loss, val_mae"):  # fmt: skip
        model.fit(X, Y, validation_data=(X, Y), epochs=2, verbose=0, callbacks=[CheckMonitor("val_acc")])


def test_gradient_accumulation_of_k_batches_is_one_step_of_a_k_times_larger_batch():
    """SGD through the config's own builder: 2 accumulated batches of 8 = one batch of 16 (mean of the two
    batch-mean gradients); a plain optimizer on batches of 8 takes two different steps."""
    weights = {}
    for name, batch, accumulate in (("accumulated", 8, 2), ("large", 16, None), ("plain", 8, None)):
        model = dense()
        model.compile(build_optimizer("sgd", 0.1, 2, 1, momentum=0.0, nesterov=False,
                                      gradient_accumulation_steps=accumulate), "mse")  # fmt: skip
        model.fit(X, Y, batch_size=batch, epochs=1, shuffle=False, verbose=0)
        weights[name] = np.concatenate([np.ravel(w) for w in model.get_weights()])
    np.testing.assert_allclose(weights["accumulated"], weights["large"], atol=1e-6)
    assert np.abs(weights["plain"] - weights["large"]).max() > 1e-3


def test_the_best_checkpoint_holds_the_weights_moving_average(tmp_path):
    """optimizer.use_ema: the kept checkpoint (what is tested, logged and exported) equals the average
    computed by hand from the raw weights after every step (Keras' rule: the first step's weights, then
    m * average + (1 - m) * weights), and differs from the raw weights."""
    momentum, raw = 0.9, []

    class Watch(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            raw.append([np.array(w) for w in self.model.get_weights()])

    model = dense()
    optimizer = build_optimizer("adam", 0.05, 4, 2, use_ema=True, ema_momentum=momentum)
    model.compile(optimizer, "mse")
    checkpoints = Checkpoints(tmp_path, resume=False)
    checkpoints.start("run")
    model.fit(X, Y, batch_size=4, validation_data=(X, Y), epochs=2, shuffle=False, verbose=0,
              callbacks=[Watch(), *checkpoints.callbacks("val_loss", "min", ema=True)])  # fmt: skip
    average = [w.copy() for w in raw[0]]
    averages = []
    for step in raw[1:]:
        average = [momentum * a + (1 - momentum) * w for a, w in zip(average, step)]
        averages.append(average)
    history = checkpoints.history()["val_loss"]
    best_epoch = int(np.argmin(history))
    expected = ([raw[0]] + averages)[4 * (best_epoch + 1) - 1]
    kept = keras.models.load_model(checkpoints.best).get_weights()
    for got, want, last_raw in zip(kept, expected, raw[4 * (best_epoch + 1) - 1]):
        np.testing.assert_allclose(got, want, atol=1e-5)
        assert np.abs(got - last_raw).max() > 1e-4
    assert checkpoints.history()["val_loss"][best_epoch] == pytest.approx(
        float(np.mean((X @ expected[0] + expected[1] - Y) ** 2)), rel=1e-4
    )  # validated on the average too


def test_label_smoothing_is_the_cross_entropy_of_the_smoothed_targets():
    probabilities = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], np.float32)
    labels = np.array([0, 1])
    e, classes = 0.1, 3
    targets = np.full((2, classes), e / classes)
    targets[np.arange(2), labels] += 1 - e
    by_hand = float(np.mean(-(targets * np.log(probabilities)).sum(-1)))
    loss = SmoothedSparseCrossentropy(e)
    assert float(loss(labels, probabilities)) == pytest.approx(by_hand, rel=1e-5)
    assert isinstance(get_task("classification").loss_and_metrics({"label_smoothing": e}, 3)[0],
                      SmoothedSparseCrossentropy)  # fmt: skip
    with pytest.raises(ConfigError, match=r"loss.label_smoothing=0.1 applies to classifiers; valid: 0 for "
                                          r"data.task=segmentation"):  # fmt: skip
        get_task("segmentation").loss_and_metrics({"ce": 1.0, "label_smoothing": 0.1}, 3)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.max_time=soon", "trainer.max_time='soon' is invalid: must be null, seconds > 0, or e.g. 90m, 2h"),
        ("trainer.early_stopping.patience=0", "trainer.early_stopping.patience=0 is invalid"),
        ("optimizer.gradient_accumulation_steps=1", "optimizer.gradient_accumulation_steps=1 is invalid"),
        ("loss.label_smoothing=1.5", "loss.label_smoothing=1.5 is invalid"),
        ("trainer.stop_at=high", "trainer.stop_at='high' is invalid: must be null (off) or the monitored metric's"),
    ],
)
def test_a_recipe_value_out_of_range_is_one_line(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_schema(compose([override]))


def test_max_time_ends_the_run_finished_after_the_epoch_that_reaches_it(tmp_path):
    """The train stage with a budget shorter than an epoch: one epoch of three, the test step and the model as
    after any run, FINISHED and tagged; EMA and steps_per_execution on, as a user would combine them."""
    overrides = [*TINY, "trainer.epochs=3", "trainer.max_time=0.01", "optimizer.use_ema=true",
                 "trainer.steps_per_execution=2", "tracking.log_model=false"]  # fmt: skip
    result = run_here("train", tmp_path, *overrides)
    assert result.returncode == 0, result.stderr[-3000:]
    [run] = find_runs(MlflowClient(f"sqlite:///{tmp_path}/mlflow.db"), "shapes", "tags.stage = 'train'")
    assert run.info.status == "FINISHED"
    assert run.data.tags["stopped_by"] == "max_time" and run.data.tags["stopped_at_epoch"] == "1"
    assert run.data.tags["jit_compile"] == "false"  # trainer.jit_compile=auto: TensorFlow on a CPU-only host
    history = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").get_metric_history(run.info.run_id, "val_loss")
    assert len(history) == 1 and math.isfinite(run.data.metrics["test_mean_iou"])


def test_stop_at_stops_after_the_first_epoch_that_reaches_the_target_in_the_metric_s_direction():
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.stop_training = False  # as Keras' fit sets it
    for mode, target, curve, expected in (
        ("max", 0.9, [0.5, 0.85, 0.91, 0.95], 2),  # the third epoch is the first at or above 0.9
        ("max", 0.9, [0.5, 0.85], None),  # never reached
        ("min", 0.2, [0.6, 0.2, 0.1], 1),  # at or below, for a loss
    ):
        target_stop = Target("val_metric", mode, target)
        target_stop.set_model(model)
        for epoch, value in enumerate(curve):
            target_stop.on_epoch_begin(epoch)
            target_stop.on_epoch_end(epoch, {"val_metric": value})
            if model.stop_training:
                break
        assert target_stop.stopped_epoch == expected
        assert (target_stop.seconds is not None) == (expected is not None)
        assert model.stop_training == (expected is not None)
        model.stop_training = False


def test_stop_at_tags_the_run_with_its_time_to_target(tmp_path):
    """val_loss (min) at or below 1e9 is reached by the first epoch: one epoch of three, tagged, its seconds
    no more than the time from the run's start to that epoch's metrics."""
    overrides = [
        *TINY,
        "trainer.epochs=3",
        "trainer.monitor=val_loss",
        "trainer.stop_at=1e9",
        "tracking.log_model=false",
    ]
    result = run_here("train", tmp_path, *overrides)
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    [run] = find_runs(client, "shapes", "tags.stage = 'train'")
    assert run.info.status == "FINISHED"
    assert run.data.tags["stopped_by"] == "stop_at" and run.data.tags["stopped_at_epoch"] == "1"
    assert run.data.tags["target_reached"] == "true"
    [epoch] = client.get_metric_history(run.info.run_id, "val_loss")
    assert 0 < run.data.metrics["time_to_target_s"] <= (epoch.timestamp - run.info.start_time) / 1000
