"""Training pieces shared by the stages: runtime set-up, optimizers and learning-rate schedules."""

import keras

from pipeline.config import checked_call
from pipeline.errors import ConfigError

OPTIMIZERS = {"adam": keras.optimizers.Adam, "adamw": keras.optimizers.AdamW, "sgd": keras.optimizers.SGD}
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")


def configure_runtime(seed: int, precision: str = "float32", deterministic: bool = False) -> None:
    """Seed Python, NumPy and the backend; choose the dtype policy; optionally force deterministic ops."""
    if precision not in PRECISIONS:
        raise ConfigError(f"trainer.precision={precision!r} is unknown; valid: {', '.join(PRECISIONS)}")
    keras.utils.set_random_seed(seed)
    keras.config.set_dtype_policy(precision)
    if deterministic and keras.config.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


def learning_rate(
    lr: float, schedule: str = "constant", steps_per_epoch: int = 1, epochs: int = 1, warmup_epochs: float = 0.0
) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """A constant rate, or cosine decay to zero over the whole run after an optional linear warm-up."""
    if schedule == "constant":
        return lr
    if schedule != "cosine":
        raise ConfigError(f"optimizer.schedule={schedule!r} is unknown; valid: constant, cosine")
    warmup = int(warmup_epochs * steps_per_epoch)
    total = max(epochs * steps_per_epoch - warmup, 1)
    if warmup:
        return keras.optimizers.schedules.CosineDecay(0.0, total, warmup_target=lr, warmup_steps=warmup)
    return keras.optimizers.schedules.CosineDecay(lr, total)


def build_optimizer(
    name: str,
    lr: float,
    steps_per_epoch: int,
    epochs: int,
    schedule: str = "constant",
    warmup_epochs: float = 0.0,
    **options,
) -> keras.optimizers.Optimizer:
    """Optimizer `name` (adam, adamw, sgd) with extra options (weight_decay, momentum, ...) from config."""
    if name not in OPTIMIZERS:
        raise ConfigError(f"optimizer.name={name!r} is unknown; valid: {', '.join(OPTIMIZERS)}")
    if not lr > 0:
        raise ConfigError(f"optimizer.lr={lr} is invalid: must be > 0")
    rate = learning_rate(lr, schedule, steps_per_epoch, epochs, warmup_epochs)
    options = {k: v for k, v in options.items() if v is not None}
    try:
        return checked_call(OPTIMIZERS[name], options, "optimizer", learning_rate=rate)
    except ValueError as err:  # Keras' own argument checks, e.g. a negative momentum
        raise ConfigError(f"optimizer ({name}): {err}") from None
