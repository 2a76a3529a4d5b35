"""The measurements of `cnn bench`, each meant to run in a fresh process:

    python -m pipeline.benchmarks.measures bare_fit '{"precision": "float32", "jit": false, "epochs": 3}'
prints one line `BENCH-RESULT {json}`. Images/s are steady-state where the caller drops the first epoch
(tracing, compilation). Training FLOPs are 3x the forward pass (backward ~ 2x forward).
"""

import json
import math
import statistics
import sys
import time
from pathlib import Path

from pipeline.config import compose
from pipeline.config.spec import plain, spec

RESULT = "BENCH-RESULT "


def _setup(precision: str = "float32", overrides: tuple[str, ...] = ()):
    """The default train config (with overrides), its data (train and val splits, decoded) and the decode speed."""
    import keras

    from pipeline.data.sources import load_data, prepare_data

    cfg = spec(compose(list(overrides)))
    keras.utils.set_random_seed(cfg.seed)
    keras.config.set_dtype_policy(precision)
    root = prepare_data(cfg.data)
    start = time.perf_counter()
    train = load_data(cfg.data, root, "train")
    decode = len(train[0]) / (time.perf_counter() - start)
    return cfg, train, load_data(cfg.data, root, "val"), decode


def bare_fit(precision: str, jit: bool, epochs: int, images: int | None = None, overrides=()) -> dict:
    """The floor: the same U-Net on the same in-memory arrays (the first `images` of them), trained by a
    plain `model.fit` with the configured loss and metric (the default's: Keras' sparse cross-entropy and MeanIoU),
    Adam at a constant rate, no augmentation and no callbacks but the img/s clock."""
    import keras
    import numpy as np

    from pipeline.lecture.arithmetic import layer_flops
    from pipeline.models import build_model
    from pipeline.tasks import get_task
    from pipeline.training.fit import model_options
    from pipeline.training.runtime import Throughput

    cfg, (x, y), (x_val, y_val), _ = _setup(precision, tuple(overrides))
    x, y = x[:images], y[:images]
    classes = len(cfg.data.classes)
    options = model_options(plain(cfg.model))
    model = build_model(cfg.model.name, x.shape[1:], classes, **options)
    loss, metrics = get_task(cfg.data.task).loss_and_metrics(plain(cfg.loss), classes)
    model.compile(optimizer=keras.optimizers.Adam(cfg.optimizer.lr), loss=loss, metrics=metrics, jit_compile=jit)
    history = model.fit(
        x.astype(np.float32),
        y,
        batch_size=cfg.trainer.batch_size,
        epochs=epochs,
        validation_data=(x_val.astype(np.float32), y_val),
        callbacks=[Throughput(len(x))],
        verbose=0,
    )
    flops = 3 * sum(layer_flops(layer) for layer in model.layers)
    return {"images_per_sec": history.history["images_per_sec"][1:], "train_flops_per_image": flops,
            "steps_per_epoch": math.ceil(len(x) / cfg.trainer.batch_size), "loss": loss.get_config()}  # fmt: skip


def input_pipeline(epochs: int) -> dict:
    """Decoding, then the training split's albumentations + batching alone, with no model."""
    from pipeline.data.augment import build_augmentation
    from pipeline.data.sequence import ImageBatches

    cfg, (x, y), _, decode = _setup()
    batches = ImageBatches(x, y, cfg.trainer.batch_size, build_augmentation(cfg.augment.train, cfg.seed), True)
    return {"images_per_sec": _epoch_rates(batches, epochs), "decode_images_per_sec": decode}


def _epoch_rates(batches, epochs: int) -> list[float]:
    """Images/s of each pass over every batch (no model), then the batches' threads stopped."""
    rates = []
    for _ in range(epochs):
        start = time.perf_counter()
        for index in range(len(batches)):
            batches[index]
        batches.on_epoch_end()
        rates.append(len(batches.samples) / (time.perf_counter() - start))
    batches.close()
    return rates


def matmul_ceiling(size: int = 2048, repeats: int = 20) -> dict:
    """The machine's practical ceiling: FLOP/s of a large matrix product, float32 and bfloat16."""
    import tensorflow as tf

    found = {}
    for dtype in ("float32", "bfloat16"):
        a = tf.random.normal((size, size), dtype=tf.float32)
        a = tf.cast(a, dtype)
        product = tf.function(lambda m: tf.matmul(m, m))
        product(a).numpy()  # trace and warm up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            product(a).numpy()
            times.append(time.perf_counter() - start)
        found[dtype] = 2 * size**3 / statistics.median(times)
    return {"flops_per_sec": found}


def _streamed_train(overrides):
    """The config with overrides, its training split as an index (data.cache from the overrides) and its
    training augmentation: what both streaming measurements iterate."""
    from pipeline.data.augment import build_augmentation
    from pipeline.data.sources import split_samples

    cfg = spec(compose(list(overrides)))
    return cfg, split_samples(cfg.data, Path(cfg.data.root))["train"], build_augmentation(cfg.augment.train, cfg.seed)


def streaming_pipeline(epochs: int, workers: int, overrides=()) -> dict:
    """The training split streamed from its PNG files (data.cache=none): decoding, the default augmentation
    and batching in `workers` threads, with no model."""
    from pipeline.data.sequence import ImageBatches

    cfg, train, augment = _streamed_train(overrides)
    batches = ImageBatches(train, None, cfg.trainer.batch_size, augment, True, cfg.seed, workers=workers)
    return {"images_per_sec": _epoch_rates(batches, epochs)}


def keras_workers_pipeline(epochs: int, workers: int, overrides=()) -> dict:
    """The engine this package did not choose, for comparison: Keras' own PyDataset workers (a thread pool
    running whole batches) over the same streamed split and augmentation, iterated as `fit` iterates it."""
    import keras
    from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter

    from pipeline.data.sequence import ImageBatches

    cfg, train, augment = _streamed_train(overrides)
    inner = ImageBatches(train, None, cfg.trainer.batch_size, augment, True, cfg.seed, prefetch=0)

    class KerasWorkers(keras.utils.PyDataset):
        def __init__(self):
            super().__init__(workers=workers, use_multiprocessing=False)

        def __len__(self):
            return len(inner)

        def __getitem__(self, index):
            return inner.batch(0, index)

    adapter, rates = PyDatasetAdapter(KerasWorkers(), shuffle=False), []
    for _ in range(epochs):
        start = time.perf_counter()
        adapter.on_epoch_begin()
        for _batch in adapter.get_numpy_iterator():
            pass
        adapter.on_epoch_end()
        rates.append(len(train) / (time.perf_counter() - start))
    return {"images_per_sec": rates}


def save_model(size: int, classes: int, path: str) -> dict:
    """The default U-Net for size x size RGB images, untrained, saved as a .keras file (what `cnn evaluate`
    scores in the memory rows: its weights do not change what a split costs)."""
    from pipeline.models import build_model
    from pipeline.training.fit import model_options

    cfg = spec(compose([]))
    model = build_model(cfg.model.name, (size, size, 3), classes, **model_options(plain(cfg.model)))
    model.save(path)
    return {"path": path}


MEASURES = {
    "keras_workers_pipeline": keras_workers_pipeline,
    "bare_fit": bare_fit,
    "input_pipeline": input_pipeline,
    "streaming_pipeline": streaming_pipeline,
    "matmul_ceiling": matmul_ceiling,
    "save_model": save_model,
}


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in MEASURES:
        print(f"usage: python -m pipeline.benchmarks.measures {'|'.join(MEASURES)} KWARGS-JSON", file=sys.stderr)
        return 2
    print(RESULT + json.dumps(MEASURES[argv[0]](**json.loads(argv[1]))), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
