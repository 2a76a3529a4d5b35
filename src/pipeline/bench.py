"""`make bench`: what the pipeline costs over hand-written Keras, and how fast it runs, side by side in one run.

    python -m pipeline.bench                  # prints the table and writes bench/results.md
    python -m pipeline.bench --repeats 3 --epochs 4

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


def _setup(precision: str = "float32"):
    """The default train config, its data (train and val splits, decoded) and the decode speed."""
    import keras
    from hydra import compose, initialize_config_dir

    from pipeline.config import conf_dir
    from pipeline.data.sources import load_data, prepare_data

    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        cfg = compose("config")
    keras.utils.set_random_seed(cfg.seed)
    keras.config.set_dtype_policy(precision)
    root = prepare_data(cfg.data)
    start = time.perf_counter()
    train = load_data(cfg.data, root, "train")
    decode = len(train[0]) / (time.perf_counter() - start)
    return cfg, train, load_data(cfg.data, root, "val"), decode


def bare_fit(precision: str, jit: bool, epochs: int, images: int | None = None) -> dict:
    """The floor: the same U-Net on the same in-memory arrays (the first `images` of them), trained by a
    plain `model.fit`."""
    import keras
    import numpy as np

    from pipeline.arithmetic import layer_flops
    from pipeline.models import build_model
    from pipeline.training.fit import model_options
    from pipeline.training.runtime import Throughput

    cfg, (x, y), (x_val, y_val), _ = _setup(precision)
    x, y = x[:images], y[:images]
    classes = len(cfg.data.classes)
    model = build_model(cfg.model.name, x.shape[1:], classes, **model_options(cfg.model))
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
    rates = []
    for _ in range(epochs):
        start = time.perf_counter()
        for index in range(len(batches)):
            batches[index]
        batches.on_epoch_end()
        rates.append(len(x) / (time.perf_counter() - start))
    return {"images_per_sec": rates, "decode_images_per_sec": decode}


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


MEASURES = {"bare_fit": bare_fit, "input_pipeline": input_pipeline, "matmul_ceiling": matmul_ceiling}


def _child(measure: str, **kwargs) -> tuple[dict, float]:
    """Run one measurement in a fresh process; returns its result and its peak resident memory (MiB)."""
    command = [sys.executable, "-m", "pipeline.bench", "--child", measure, json.dumps(kwargs)]
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


def train_stage(epochs: int, workdir: Path) -> tuple[dict, float]:
    """`python -m pipeline.train` itself (augmentation, callbacks, tracking), into a scratch MLflow store."""
    from pipeline import tracking

    store = f"sqlite:///{workdir}/mlflow.db"
    run_dir = workdir / f"stage-{time.monotonic_ns()}"
    command = [sys.executable, "-m", "pipeline.train", f"trainer.epochs={epochs}", "trainer.verbose=0"]
    command += ["trainer.precision=float32"]  # as the bare fit it is compared with
    command += ["tracking.log_model=false", f"hydra.run.dir={run_dir}", f"tracking.artifact_root={workdir}/artifacts"]
    _, peak = _run(command, {**os.environ, "MLFLOW_TRACKING_URI": store})
    rates = tracking.last_run_metric(store, "shapes", "images_per_sec")
    return {"images_per_sec": rates[1:]}, peak


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
    return {"rates": rates, "peaks": peaks, **found}


def table(m: dict, repeats: int, epochs: int) -> str:
    r = {name: median(values) for name, values in m["rates"].items()}
    peak = {name: median(values) for name, values in m["peaks"].items()}
    flops = m["train_flops_per_image"]
    bare, ceiling = r["bare"], m["ceiling"]
    rows = [
        ("train stage vs bare `model.fit`", f"{r['stage']:.0f} vs {bare:.0f} img/s", r["stage"] / bare, "≥ 0.95"),
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
    for name, values, ratio, target in rows:
        met = "" if target == "report" else (" ✓" if ratio >= float(target.split()[-1]) else " ✗")
        lines.append(f"| {name} | {values} | {ratio:.2f}{met} | {target} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3, help="per measurement; the first is dropped")
    parser.add_argument("--out", type=Path, default=project_root() / "bench" / "results.md")
    parser.add_argument("--child", nargs=2, metavar=("MEASURE", "KWARGS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
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
