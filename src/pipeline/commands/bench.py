"""`make bench`: what the pipeline costs over hand-written Keras, and how fast it runs, side by side in one run.

    cnn bench                  # prints the table and writes bench/results.md
    cnn bench --repeats 3 --epochs 4
    cnn bench --only stage        # the first row alone: the train stage vs bare model.fit

Each measurement runs in a fresh Python process (its own TensorFlow runtime, its own peak memory), in
interleaved order and repeated, and the table reports medians and ratios: absolute speeds on a shared
machine are noisy, ratios measured together are not. Images/s are steady-state: the first epoch
(tracing, compilation) is dropped. Training FLOPs are 3x the forward pass (backward ~ 2x forward).
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pipeline.config import project_root

RESULT = "BENCH-RESULT "


def _setup(precision: str = "float32", overrides: tuple[str, ...] = ()):
    """The default train config (with overrides), its data (train and val splits, decoded) and the decode speed."""
    import keras
    from hydra import compose, initialize_config_dir

    from pipeline.config import conf_dir
    from pipeline.data.sources import load_data, prepare_data

    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides))
    keras.utils.set_random_seed(cfg.seed)
    keras.config.set_dtype_policy(precision)
    root = prepare_data(cfg.data)
    start = time.perf_counter()
    train = load_data(cfg.data, root, "train")
    decode = len(train[0]) / (time.perf_counter() - start)
    return cfg, train, load_data(cfg.data, root, "val"), decode


def bare_fit(precision: str, jit: bool, epochs: int, images: int | None = None, overrides=()) -> dict:
    """The floor: the same U-Net on the same in-memory arrays (the first `images` of them), trained by a
    plain `model.fit`."""
    import keras
    import numpy as np
    from omegaconf import OmegaConf

    from pipeline.lecture.arithmetic import layer_flops
    from pipeline.models import build_model
    from pipeline.training.fit import model_options
    from pipeline.training.runtime import Throughput

    cfg, (x, y), (x_val, y_val), _ = _setup(precision, tuple(overrides))
    x, y = x[:images], y[:images]
    classes = len(cfg.data.classes)
    options = model_options(OmegaConf.to_container(cfg.model, resolve=True))
    model = build_model(cfg.model.name, x.shape[1:], classes, **options)
    model.compile(
        optimizer=keras.optimizers.Adam(cfg.optimizer.lr),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=[keras.metrics.MeanIoU(classes, sparse_y_pred=False)],
        jit_compile=jit,
    )
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
    return {"images_per_sec": history.history["images_per_sec"][1:], "train_flops_per_image": flops}


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
    from hydra import compose, initialize_config_dir

    from pipeline.config import conf_dir
    from pipeline.data.augment import build_augmentation
    from pipeline.data.sources import split_samples

    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides))
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


MEASURES = {
    "keras_workers_pipeline": keras_workers_pipeline,
    "bare_fit": bare_fit,
    "input_pipeline": input_pipeline,
    "streaming_pipeline": streaming_pipeline,
    "matmul_ceiling": matmul_ceiling,
}


def _child(measure: str, **kwargs) -> tuple[dict, float]:
    """Run one measurement in a fresh process; returns its result and its peak resident memory (MiB)."""
    command = [sys.executable, "-m", "pipeline.commands.bench", "--child", measure, json.dumps(kwargs)]
    return _run(command, os.environ)


def _run(command: list[str], env) -> tuple[dict, float]:
    with tempfile.TemporaryFile("w+") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
        _, status, usage = os.wait4(process.pid, 0)  # this child's own peak memory
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read()
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:4])} failed:\n{text[-3000:]}")
    results = [json.loads(line[len(RESULT) :]) for line in text.splitlines() if line.startswith(RESULT)]
    return (results[-1] if results else {}), usage.ru_maxrss / 1024


def train_stage(epochs: int, workdir: Path, overrides: tuple[str, ...] = ()) -> tuple[dict, float]:
    """`cnn train` itself (augmentation, callbacks, tracking), into a scratch MLflow store."""
    from pipeline import tracking

    store = f"sqlite:///{workdir}/mlflow.db"
    run_dir = workdir / f"stage-{time.monotonic_ns()}"
    command = [
        sys.executable,
        "-m",
        "pipeline.commands.train",
        f"trainer.epochs={epochs}",
        "trainer.verbose=0",
        *overrides,
    ]
    command += ["trainer.precision=float32"]  # as the bare fit it is compared with
    command += ["tracking.log_model=false", f"hydra.run.dir={run_dir}", f"tracking.artifact_root={workdir}/artifacts"]
    _, peak = _run(command, {**os.environ, "MLFLOW_TRACKING_URI": store})
    experiment = next((o.split("=", 1)[1] for o in overrides if o.startswith("tracking.experiment=")), "shapes")
    rates = tracking.last_run_metric(store, experiment, "images_per_sec")
    return {"images_per_sec": rates[1:]}, peak


def linked_set(root: Path, size: int, distinct: int, train: int, held_out: int = 16) -> Path:
    """A segmentation folder set of `train` training images at size x size, made of `distinct` generated shapes
    images hard-linked under new names (every file is read and decoded on its own; only the disk is spared),
    plus `held_out` val and test images. Built once per (size, distinct, train) under root."""
    import os as _os

    from pipeline.data.shapes import ShapesSpec, generate

    out = root / f"linked{size}-{distinct}-{train}"
    if (out / "train" / "images").is_dir() and len(list((out / "train" / "images").iterdir())) == train:
        return out
    source = root / f"shapes{size}-{distinct}"
    counts = (("train", distinct), ("val", held_out), ("test", held_out))
    spec = ShapesSpec(image_size=size, counts=counts, min_size=size // 10, max_size=size // 4)
    generate(source, spec, progress=False)
    for split in ("train", "val", "test"):
        for kind in ("images", "masks"):
            (out / split / kind).mkdir(parents=True, exist_ok=True)
            files = sorted((source / split / kind).iterdir())
            count = train if split == "train" else held_out
            for i in range(count):
                target = out / split / kind / f"{i:06d}.png"
                if not target.exists():
                    _os.link(files[i % len(files)], target)
    return out


def linked_tree(root: Path, size: int, distinct: int, total: int, classes: int = 3) -> Path:
    """A classification tree root/<class>/*.png of `total` images at size x size: `distinct` generated shapes
    images hard-linked under new names (each file is still read and decoded on its own)."""
    out = root / f"tree{size}-{distinct}-{total}"
    if out.is_dir() and sum(1 for _ in out.rglob("*.png")) == total:
        return out
    source = linked_set(root, size, distinct, distinct) / "train" / "images"
    files = sorted(source.iterdir())
    for i in range(total):
        folder = out / f"class{i % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{i:06d}.png"
        if not target.exists():
            os.link(files[i % len(files)], target)
    return out


def tree_overrides(root: Path, size: int, train: int, *extra: str) -> tuple[str, ...]:
    """A linked tree read as a user's image folder, streamed, `train` training images, a cheap classifier
    (AlexNet's 11x11 stride-4 stem): the rows that use it measure the data pipeline, not the model."""
    return ("data=image_folder", f"data.root={root}", f"data.image_size={size}", "data.cache=none",
            "data.val_fraction=0.01", "data.test_fraction=0.01", f"data.splits.train={train}", "model=alexnet",
            "model.small_input=false", "tracking.experiment=bench", *extra)  # fmt: skip


def folder_overrides(root: Path, size: int, *extra: str, cache: str = "none") -> tuple[str, ...]:
    """A generated linked set read as a user's folder (data=folder), streamed by default (data.cache=none)."""
    return ("data=folder", f"data.root={root}", "data.classes=[background,circle,square,triangle]",
            f"data.image_size={size}", f"data.cache={cache}", "tracking.experiment=bench", *extra)  # fmt: skip


def median(values) -> float:
    return statistics.median(values)


VARIANTS = {"fp32": ("float32", False), "bf16": ("mixed_bfloat16", False), "fp32+xla": ("float32", True)}
VARIANT_IMAGES = 256  # precision and XLA are compared on a subset: XLA on CPU is several times slower


def measure(repeats: int, epochs: int) -> dict:
    """The stage and its bare floor `repeats` times, interleaved; then the precision and XLA variants once each
    (their ratios are reported, not targets); collect per-epoch rates and peak memories."""
    rates = {name: [] for name in ["stage", "bare", "input", *VARIANTS]}
    peaks, found = {"stage": [], "bare": []}, {}
    with tempfile.TemporaryDirectory() as scratch:
        for repeat in range(repeats):
            print(f"[{repeat + 1}/{repeats}] bare model.fit", flush=True)
            result, peak = _child("bare_fit", precision="float32", jit=False, epochs=epochs)
            rates["bare"] += result["images_per_sec"]
            peaks["bare"].append(peak)
            found["train_flops_per_image"] = result["train_flops_per_image"]
            print(f"[{repeat + 1}/{repeats}] train stage", flush=True)
            result, peak = train_stage(epochs, Path(scratch))
            rates["stage"] += result["images_per_sec"]
            peaks["stage"].append(peak)
            print(f"[{repeat + 1}/{repeats}] input pipeline", flush=True)
            result, _ = _child("input_pipeline", epochs=epochs)
            rates["input"] += result["images_per_sec"]
            found["decode_images_per_sec"] = result["decode_images_per_sec"]
        for name, (precision, jit) in VARIANTS.items():
            print(f"bare model.fit {name} on {VARIANT_IMAGES} images", flush=True)
            result, _ = _child("bare_fit", precision=precision, jit=jit, epochs=epochs, images=VARIANT_IMAGES)
            rates[name] += result["images_per_sec"]
        print("matmul ceiling", flush=True)
        found["ceiling"] = _child("matmul_ceiling")[0]["flops_per_sec"]
        found.update(measure_streaming(Path(scratch), repeats, epochs))
        print("config errors", flush=True)
        found["config_errors"] = config_errors(Path(scratch), repeats)
    return {"rates": rates, "peaks": peaks, **found}


CONFIG_ERRORS = ("trainer.epoch=3", "+trainer.epoch=3", "optimizer.lr=-1")  # a typo, the same with +, a bad value


def config_errors(scratch: Path, repeats: int) -> dict[str, list[float]]:
    """Wall time of the train stage answering a bad override (one `error:` line, exit 2), per override."""
    times: dict[str, list[float]] = {override: [] for override in CONFIG_ERRORS}
    for _ in range(max(3, repeats)):
        for override in CONFIG_ERRORS:
            start = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "pipeline.commands.train", f"paths.root={scratch}", override],
                                  capture_output=True, text=True)  # fmt: skip
            times[override].append(time.perf_counter() - start)
            if done.returncode != 2:
                raise SystemExit(f"{override}: expected one config error (exit 2), got {done.returncode}")
    return times


def config_error_row(times: dict[str, list[float]]) -> tuple[str, str, float, str]:
    seconds = {override: median(values) for override, values in times.items()}
    shown = ", ".join(f"`{override}` {value:.2f} s" for override, value in seconds.items())
    return "config error, wall time (s, the slowest of three bad overrides)", shown, max(seconds.values()), "≤ 1.5"


def measure_streaming(scratch: Path, repeats: int, epochs: int) -> dict:
    """The streaming rows: the input pipeline at 256 px per worker count, the train stage's peak memory on
    1,000 vs 4,000 streamed images, and the streamed train stage vs bare fit on in-memory arrays at 128 px."""
    from pipeline.data.samples import usable_cores

    cores = usable_cores()
    set256 = linked_set(scratch, 256, 64, 256)
    workers = {}
    for count in range(1, cores + 1):
        print(f"input pipeline at 256 px, streamed, {count} worker(s)", flush=True)
        result, _ = _child("streaming_pipeline", epochs=epochs, workers=count, overrides=folder_overrides(set256, 256))
        workers[count] = result["images_per_sec"]
    print(f"input pipeline at 256 px, streamed, Keras PyDataset workers={cores}", flush=True)
    overrides = folder_overrides(set256, 256)
    keras_workers = _child("keras_workers_pipeline", epochs=epochs, workers=cores, overrides=overrides)[0]
    rss, tree = {}, linked_tree(scratch, 256, 64, 4100)
    for images in (1000, 4000):
        print(f"train stage on {images} streamed 256-px images (peak memory)", flush=True)
        overrides = tree_overrides(tree, 256, images, "trainer.precision=float32", "tracking.log_model=false")
        rss[images] = train_stage(1, scratch, overrides)[1]
    set128 = linked_set(scratch, 128, 512, 512)
    stream, bare = [], []
    for repeat in range(repeats):
        print(f"[{repeat + 1}/{repeats}] streamed train stage vs bare fit at 128 px", flush=True)
        stream += train_stage(epochs, scratch, folder_overrides(set128, 128))[0]["images_per_sec"]
        overrides = folder_overrides(set128, 128, cache="memory")
        bare += _child("bare_fit", precision="float32", jit=False, epochs=epochs, overrides=overrides)[0][
            "images_per_sec"
        ]
    return {"workers": workers, "keras_workers": keras_workers["images_per_sec"], "rss": rss, "stream128": stream,
            "bare128": bare}  # fmt: skip


def streaming_rows(m: dict) -> list[tuple[str, str, float, str]]:
    one = median(m["workers"][1] if 1 in m["workers"] else m["workers"]["1"])
    rows = []
    for count, rates in sorted((int(k), v) for k, v in m["workers"].items()):
        rate = median(rates)
        rows.append((f"input pipeline, streamed 256 px, {count} worker(s): scaling efficiency",
                     f"{rate:.0f} img/s ({rate / one:.2f}x one worker)", rate / one / count, "report"))  # fmt: skip
    ours, theirs, cores = median(m["workers"][max(m["workers"])]), median(m["keras_workers"]), max(m["workers"])
    rows.append((f"input pipeline, streamed 256 px, {cores} workers: ours vs Keras PyDataset workers",
                 f"{ours:.0f} vs {theirs:.0f} img/s", ours / theirs, "report"))  # fmt: skip
    small, large = (m["rss"].get(n, m["rss"].get(str(n))) for n in (1000, 4000))
    name = "peak memory: train stage, 4,000 vs 1,000 streamed 256-px images (image folder)"
    rows.append((name, f"{large:.0f} vs {small:.0f} MiB", large / small, "≤ 1.15"))
    stream, bare = median(m["stream128"]), median(m["bare128"])
    rows.append(("train stage (streamed from PNGs) vs bare `model.fit` (arrays in memory), 128 px",
                 f"{stream:.0f} vs {bare:.0f} img/s", stream / bare, "≥ 0.95"))  # fmt: skip
    return rows


def stage_row(stage: float, bare: float) -> tuple[str, str, float, str]:
    return "train stage vs bare `model.fit`", f"{stage:.0f} vs {bare:.0f} img/s", stage / bare, "≥ 0.95"


def stage_vs_bare(repeats: int, epochs: int) -> tuple[str, str, float, str]:
    """The first row alone: the train stage and its bare floor, interleaved `repeats` times."""
    rates = {"stage": [], "bare": []}
    with tempfile.TemporaryDirectory() as scratch:
        for repeat in range(repeats):
            print(f"[{repeat + 1}/{repeats}] bare model.fit", flush=True)
            rates["bare"] += _child("bare_fit", precision="float32", jit=False, epochs=epochs)[0]["images_per_sec"]
            print(f"[{repeat + 1}/{repeats}] train stage", flush=True)
            rates["stage"] += train_stage(epochs, Path(scratch))[0]["images_per_sec"]
    return stage_row(median(rates["stage"]), median(rates["bare"]))


def table(m: dict, repeats: int, epochs: int) -> str:
    r = {name: median(values) for name, values in m["rates"].items()}
    peak = {name: median(values) for name, values in m["peaks"].items()}
    flops = m["train_flops_per_image"]
    bare, ceiling = r["bare"], m["ceiling"]
    rows = [
        stage_row(r["stage"], bare),
        (
            "input pipeline (augment + batch) vs training step",
            f"{r['input']:.0f} vs {bare:.0f} img/s",
            r["input"] / bare,
            "≥ 2",
        ),
        (
            "U-Net training FLOP/s vs float32 matmul",
            f"{bare * flops / 1e9:.1f} vs {ceiling['float32'] / 1e9:.1f} GFLOP/s",
            bare * flops / ceiling["float32"],
            "report",
        ),
        (
            f"mixed_bfloat16 vs float32 ({VARIANT_IMAGES} images)",
            f"{r['bf16']:.0f} vs {r['fp32']:.0f} img/s",
            r["bf16"] / r["fp32"],
            "report",
        ),
        (
            f"jit_compile (XLA) vs none, float32 ({VARIANT_IMAGES} images)",
            f"{r['fp32+xla']:.0f} vs {r['fp32']:.0f} img/s",
            r["fp32+xla"] / r["fp32"],
            "report",
        ),
        (
            "peak memory: train stage vs bare `model.fit`",
            f"{peak['stage']:.0f} vs {peak['bare']:.0f} MiB",
            peak["stage"] / peak["bare"],
            "report",
        ),
    ]
    rows += streaming_rows(m)
    if "config_errors" in m:
        rows.append(config_error_row(m["config_errors"]))
    lines = [
        f"Medians over {repeats} repeats x {epochs - 1} steady-state epochs (variants: one run); "
        "default U-Net (conf/model/unet.yaml), "
        f"shapes 64x64, batch 32; {platform.processor() or platform.machine()}, {os.cpu_count()} cores.",
        f"Bfloat16 matmul ceiling: {m['ceiling']['bfloat16'] / 1e9:.1f} GFLOP/s; PNG decoding (once per run, "
        f"not per epoch): {m['decode_images_per_sec']:.0f} img/s.",
        "",
        "| measurement | values | ratio | target |",
        "|---|---|---|---|",
    ]
    lines += [table_row(*row) for row in rows]
    return "\n".join(lines) + "\n"


def table_row(name: str, values: str, ratio: float, target: str) -> str:
    """A Markdown row, its ratio marked ✓ or ✗ against a target (≥ x or ≤ x; `report` has none)."""
    bound = None if target == "report" else float(target.split()[-1])
    met = "" if bound is None else (" ✓" if (ratio <= bound if target.startswith("≤") else ratio >= bound) else " ✗")
    return f"| {name} | {values} | {ratio:.2f}{met} | {target} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3, help="per measurement; the first is dropped")
    parser.add_argument("--out", type=Path, default=project_root() / "bench" / "results.md")
    parser.add_argument("--child", nargs=2, metavar=("MEASURE", "KWARGS"), help=argparse.SUPPRESS)
    parser.add_argument("--only", choices=["config_errors", "stage"], help="measure one row alone and print it")
    args = parser.parse_args()
    if args.only == "stage":
        print(table_row(*stage_vs_bare(args.repeats, args.epochs)))
        return
    if args.only:
        with tempfile.TemporaryDirectory() as scratch:
            print(table_row(*config_error_row(config_errors(Path(scratch), args.repeats))))
        return
    if args.child:  # one measurement, in this fresh process
        measure_name, kwargs = args.child
        print(RESULT + json.dumps(MEASURES[measure_name](**json.loads(kwargs))), flush=True)
        return
    if args.epochs < 2 or args.repeats < 1:
        parser.error("--epochs must be >= 2 (the first epoch is dropped) and --repeats >= 1")
    start = time.perf_counter()
    found = measure(args.repeats, args.epochs)
    text = table(found, args.repeats, args.epochs) + f"\nTook {time.perf_counter() - start:.0f} s.\n"
    print("\n" + text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("# `make bench`\n\n" + text)
    args.out.with_suffix(".json").write_text(json.dumps(found, indent=1))


if __name__ == "__main__":
    main()
