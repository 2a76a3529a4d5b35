"""Training pieces shared by the stages: runtime set-up, distribution, optimizers and learning-rate schedules."""

import contextlib
import dataclasses
import json
import os
import time
from pathlib import Path

import keras

from pipeline.config import checked_call, options
from pipeline.config.options import LR_SCALING, PRECISIONS, STRATEGIES
from pipeline.errors import ConfigError

OPTIMIZERS = {"adam": keras.optimizers.Adam, "adamw": keras.optimizers.AdamW, "sgd": keras.optimizers.SGD}
assert tuple(OPTIMIZERS) == options.OPTIMIZERS


def native_bfloat16_cpu() -> bool:
    """Whether this CPU computes bfloat16 in hardware (AVX512-BF16 or AMX): there, mixed_bfloat16 trains the
    default U-Net ~25 % faster at the same accuracy (`make bench`); elsewhere bfloat16 is emulated and slower."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: no cheap way to know, so the safe choice
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str) -> str:
    """`auto`: mixed_bfloat16 on a CPU with native bfloat16, float32 otherwise (GPUs: trainer=gpu)."""
    if precision not in PRECISIONS:
        raise ConfigError(f"trainer.precision={precision!r} is unknown; valid: {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "mixed_bfloat16" if native_bfloat16_cpu() else "float32"
    return precision


def configure_runtime(seed: int, precision: str = "float32", deterministic: bool = False) -> str:
    """Seed Python, NumPy and the backend; choose the dtype policy (returned); optionally deterministic ops."""
    precision = resolve_precision(precision)
    keras.utils.set_random_seed(seed)
    keras.config.set_dtype_policy(precision)
    if deterministic and keras.config.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    return precision


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


@dataclasses.dataclass(frozen=True)
class Distribution:
    """Where to build the model (scope), over how many replicas, and whether this process records results."""

    strategy: object = None  # a tf.distribute.Strategy, or None: the backend's default placement
    replicas: int = 1
    worker: int = 0  # this host's index among the workers; worker 0 is the chief
    processes: int = 1  # JAX: processes feeding one global batch together, each its own slice of it
    hosts: int = 1  # tf.distribute: the workers of a MultiWorkerMirroredStrategy (each shards its batches itself)

    @property
    def shard(self) -> tuple[int, int]:
        """(this process's slice, of how many) of every global batch: under JAX several processes each feed
        theirs; tf.distribute shards a worker's batches itself."""
        return (self.worker, self.processes) if self.processes > 1 else (0, 1)

    def agree(self, flag: bool) -> bool:
        """The chief's answer, on every process (a wall-clock decision, such as trainer.max_time's, must be the
        same everywhere, or one process would wait for the others in its next step forever)."""
        if self.processes > 1:
            import numpy as np
            from jax.experimental import multihost_utils

            return bool(multihost_utils.broadcast_one_to_all(np.asarray(flag)))
        if self.hosts > 1:  # an all-reduce of the chief's flag (the others add 0), on every replica of every host
            import tensorflow as tf

            mine = tf.constant(float(flag) if self.is_chief else 0.0)
            total = self.strategy.reduce("SUM", self.strategy.run(tf.function(lambda: tf.identity(mine))), axis=None)
            return bool(total > 0)
        return flag

    def check_placement(self, model: keras.Model) -> None:
        """Under JAX, the model's weights must live on every device the batches are split over (a Keras session
        cleared after the distribution was set would silently train on one)."""
        if self.replicas < 2 or keras.config.backend() != "jax":
            return
        found = len(model.weights[0].value.sharding.device_set)
        if found != self.replicas:
            raise RuntimeError(f"the model's weights live on {found} device(s), not the {self.replicas} of the "
                               f"distribution: {keras.distribution.distribution()}")  # fmt: skip

    def localize(self) -> None:
        """After training under several JAX processes: models built or loaded from here on live on this process's
        own device, so each process can test and export the kept model alone."""
        if self.processes > 1:
            keras.distribution.set_distribution(None)

    def scope(self) -> contextlib.AbstractContextManager:
        """Build models and optimizers in here, so their variables live on every replica."""
        return self.strategy.scope() if self.strategy is not None else contextlib.nullcontext()

    @property
    def is_chief(self) -> bool:
        return self.worker == 0

    def global_batch(self, per_replica: int) -> int:
        return per_replica * self.replicas

    def check_split_sizes(self, sizes: dict[str, int], backend: str | None = None) -> None:
        """Under JAX, every batch is split evenly over the devices (jax.make_array_from_process_local_data): a
        split whose last batch cannot be is one line (TensorFlow's strategies take uneven batches)."""
        if self.replicas < 2 or (backend or keras.config.backend()) != "jax":
            return
        for split, size in sizes.items():
            if size % self.replicas:
                raise ConfigError(
                    f"trainer.strategy: {self.replicas} devices share every batch, but the {split} split has {size} "
                    f"images, so its last batch cannot be shared evenly; valid: data.splits.{split}="
                    f"{size - size % self.replicas} (a multiple of {self.replicas}), or fewer devices"
                )

    def check_bad_file_policy(self, policy: str, backend: str | None = None) -> None:
        """Under JAX every batch is split evenly over the devices (and the processes): a skipped file would leave
        a batch that cannot be (TensorFlow's strategies take uneven batches)."""
        if policy == "skip" and self.replicas > 1 and (backend or keras.config.backend()) == "jax":
            raise ConfigError(
                f"data.on_bad_file=skip cannot be used when {self.replicas} devices share every batch under JAX: a "
                "skipped file would leave a batch that cannot be shared evenly; valid: data.on_bad_file=error, "
                "with the bad files removed (a one-device run with data.on_bad_file=skip lists them in its run's "
                "data/skipped_files.txt)"
            )

    def scaled_lr(self, lr: float, rule: str = "linear") -> float:
        """The linear scaling rule (Goyal et al. 2017): k times the batch, k times the learning rate."""
        if rule not in LR_SCALING:
            raise ConfigError(f"trainer.lr_scaling={rule!r} is unknown; valid: {', '.join(LR_SCALING)}")
        return lr * {"linear": self.replicas, "sqrt": self.replicas**0.5, "none": 1}[rule]


def configure_distribution(strategy: str = "auto", memory_growth: bool = False) -> Distribution:
    """Data parallelism on the existing engines: tf.distribute under TensorFlow, keras.distribution under JAX.

    auto: every local GPU when there are several, else the default single-device strategy; mirrored: all local
    devices (MirroredStrategy); multi_worker: every device of every host listed in TF_CONFIG
    (MultiWorkerMirroredStrategy), or under JAX of every process of the cluster (see `_jax_distribution`).
    Call before any other backend work: collective ops need a fresh runtime.
    """
    if strategy not in STRATEGIES:
        raise ConfigError(f"trainer.strategy={strategy!r} is unknown; valid: {', '.join(STRATEGIES)}")
    if keras.config.backend() == "jax":
        return _jax_distribution(strategy)
    if keras.config.backend() != "tensorflow":
        return Distribution()
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if memory_growth:
        for gpu in gpus:  # take GPU memory as needed instead of all of it up front
            tf.config.experimental.set_memory_growth(gpu, True)
    if strategy == "multi_worker":
        tf_config = json.loads(os.environ.get("TF_CONFIG") or "{}")
        if "cluster" not in tf_config or "task" not in tf_config:
            raise ConfigError(
                "trainer.strategy=multi_worker needs TF_CONFIG with 'cluster' and 'task', e.g. "
                '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}'
            )
        from pipeline.training.compat import patch_keras_for_multi_worker

        patch_keras_for_multi_worker()
        found = tf.distribute.MultiWorkerMirroredStrategy()
        resolver = found.cluster_resolver
        worker = 0 if resolver.task_type == "chief" else resolver.task_id + ("chief" in tf_config["cluster"])
        hosts = sum(len(tasks) for role, tasks in tf_config["cluster"].items() if role in ("chief", "worker"))
        return Distribution(found, found.num_replicas_in_sync, worker, hosts=hosts)
    if strategy == "mirrored" or len(gpus) > 1:
        found = tf.distribute.MirroredStrategy()
        return Distribution(found, found.num_replicas_in_sync)
    return Distribution()


JAX_CLUSTER = ("KERAS_DISTRIBUTION_JOB_ADDRESSES", "KERAS_DISTRIBUTION_NUM_PROCESSES", "KERAS_DISTRIBUTION_PROCESS_ID")


def _jax_distribution(strategy: str) -> Distribution:
    """keras.distribution.DataParallel over every device: the local ones, or with multi_worker those of every
    process (keras.distribution.initialize: the coordinator, process count and id from KERAS_DISTRIBUTION_* or,
    inside a SLURM job step, from SLURM's own variables). Each process then feeds its slice of the global batch."""
    if strategy == "multi_worker":
        given = [name for name in JAX_CLUSTER if os.environ.get(name)]
        if len(given) != len(JAX_CLUSTER) and not os.environ.get("SLURM_JOB_ID"):
            missing = ", ".join(name for name in JAX_CLUSTER if name not in given)
            raise ConfigError(
                f"trainer.strategy=multi_worker under KERAS_BACKEND=jax needs the cluster: {missing} not set "
                "(found: " + (", ".join(f"{name}={os.environ[name]}" for name in given) or "none") + "); valid: "
                "KERAS_DISTRIBUTION_JOB_ADDRESSES=<coordinator host:port> KERAS_DISTRIBUTION_NUM_PROCESSES=<n> "
                "KERAS_DISTRIBUTION_PROCESS_ID=<0..n-1> on every process, or srun inside a SLURM allocation"
            )
        keras.distribution.initialize()
    import jax

    devices = keras.distribution.list_devices()
    if strategy != "auto" or len(devices) > 1:
        parallel = keras.distribution.DataParallel(devices=devices, auto_shard_dataset=False)  # ImageBatches shards
        keras.distribution.set_distribution(parallel)
        return Distribution(replicas=len(devices), worker=jax.process_index(), processes=jax.process_count())
    return Distribution()


class Throughput(keras.callbacks.Callback):
    """Adds `images_per_sec` to each epoch's logs: training images over the time of the epoch's training steps
    (validation excluded), so MLflow shows the speed of every run and `make bench` compares it with bare Keras."""

    def __init__(self, images_per_epoch: int):
        super().__init__()
        self.images_per_epoch = images_per_epoch

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.start = self.last_step = time.perf_counter()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.last_step = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None:
            logs["images_per_sec"] = self.images_per_epoch / max(self.last_step - self.start, 1e-9)
