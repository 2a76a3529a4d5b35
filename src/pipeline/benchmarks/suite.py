"""The measurements of `cnn bench` run interleaved and repeated, each in a fresh process; their raw results.

Absolute speeds on a shared machine are noisy, ratios measured together are not: each row's two sides run
one after the other, `repeats` times.
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pipeline.benchmarks.datasets import folder_overrides, linked_set, linked_tree, tree_overrides
from pipeline.benchmarks.measures import RESULT


def child(measure: str, **kwargs) -> tuple[dict, float]:
    """Run one measurement in a fresh process; returns its result and its peak resident memory (MiB)."""
    command = [sys.executable, "-m", "pipeline.benchmarks.measures", measure, json.dumps(kwargs)]
    return run(command, os.environ)


def run(command: list[str], env) -> tuple[dict, float]:
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


def train_stage(
    epochs: int, workdir: Path, overrides: tuple[str, ...] = (), env: dict | None = None
) -> tuple[dict, float]:
    """`cnn train` itself (augmentation, callbacks, tracking), into a scratch MLflow store; float32 (as the bare
    fit it is compared with) unless `overrides` say otherwise (Hydra: the last value of a key wins); `env`
    added to the child's environment."""
    from pipeline import tracking

    store = f"sqlite:///{workdir}/mlflow.db"
    run_dir = workdir / f"stage-{time.monotonic_ns()}"
    command = [sys.executable, "-m", "pipeline.commands.train", f"trainer.epochs={epochs}", "trainer.verbose=0",
               "trainer.precision=float32", *overrides]  # fmt: skip
    command += ["tracking.log_model=false", f"hydra.run.dir={run_dir}", f"tracking.artifact_root={workdir}/artifacts"]
    _, peak = run(command, {**os.environ, "MLFLOW_TRACKING_URI": store, **(env or {})})
    experiment = next((o.split("=", 1)[1] for o in overrides if o.startswith("tracking.experiment=")), "shapes")
    rates = tracking.last_run_metric(store, experiment, "images_per_sec")
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
            result, peak = child("bare_fit", precision="float32", jit=False, epochs=epochs)
            rates["bare"] += result["images_per_sec"]
            peaks["bare"].append(peak)
            found["train_flops_per_image"] = result["train_flops_per_image"]
            print(f"[{repeat + 1}/{repeats}] train stage", flush=True)
            result, peak = train_stage(epochs, Path(scratch))
            rates["stage"] += result["images_per_sec"]
            peaks["stage"].append(peak)
            print(f"[{repeat + 1}/{repeats}] input pipeline", flush=True)
            result, _ = child("input_pipeline", epochs=epochs)
            rates["input"] += result["images_per_sec"]
            found["decode_images_per_sec"] = result["decode_images_per_sec"]
        for name, (precision, jit) in VARIANTS.items():
            print(f"bare model.fit {name} on {VARIANT_IMAGES} images", flush=True)
            result, _ = child("bare_fit", precision=precision, jit=jit, epochs=epochs, images=VARIANT_IMAGES)
            rates[name] += result["images_per_sec"]
        print("matmul ceiling", flush=True)
        found["ceiling"] = child("matmul_ceiling")[0]["flops_per_sec"]
        found.update(measure_streaming(Path(scratch), repeats, epochs))
        found["evaluate_rss"] = evaluation_memory(Path(scratch))
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


def measure_streaming(scratch: Path, repeats: int, epochs: int) -> dict:
    """The streaming rows: the input pipeline at 256 px per worker count, the train stage's peak memory on
    1,000 vs 4,000 streamed images, and the streamed train stage vs bare fit on in-memory arrays at 128 px."""
    from pipeline.data.samples import usable_cores

    cores = usable_cores()
    set256 = linked_set(scratch, 256, 64, 256)
    workers = {}
    for count in range(1, cores + 1):
        print(f"input pipeline at 256 px, streamed, {count} worker(s)", flush=True)
        result, _ = child("streaming_pipeline", epochs=epochs, workers=count, overrides=folder_overrides(set256, 256))
        workers[count] = result["images_per_sec"]
    print(f"input pipeline at 256 px, streamed, Keras PyDataset workers={cores}", flush=True)
    overrides = folder_overrides(set256, 256)
    keras_workers = child("keras_workers_pipeline", epochs=epochs, workers=cores, overrides=overrides)[0]
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
        bare += child("bare_fit", precision="float32", jit=False, epochs=epochs, overrides=overrides)[0][
            "images_per_sec"
        ]
    return {"workers": workers, "keras_workers": keras_workers["images_per_sec"], "rss": rss, "stream128": stream,
            "bare128": bare}  # fmt: skip


def stage_vs_bare(repeats: int, epochs: int, overrides: tuple[str, ...] = ()) -> tuple[float, float]:
    """The first row alone: median img/s of the train stage and of its bare floor, interleaved `repeats` times,
    both on the default config with `overrides` (Hydra's: e.g. trainer.batch_size=16, loss=lovasz) and float32
    unless they set trainer.precision."""
    from pipeline.training.runtime import resolve_precision

    chosen = [o.split("=", 1)[1] for o in overrides if o.startswith("trainer.precision=")]
    precision = resolve_precision(chosen[-1]) if chosen else "float32"
    rates = {"stage": [], "bare": []}
    with tempfile.TemporaryDirectory() as scratch:
        for repeat in range(repeats):
            print(f"[{repeat + 1}/{repeats}] bare model.fit", flush=True)
            bare = child("bare_fit", precision=precision, jit=False, epochs=epochs, overrides=list(overrides))[0]
            rates["bare"] += bare["images_per_sec"]
            print(f"[{repeat + 1}/{repeats}] train stage", flush=True)
            rates["stage"] += train_stage(epochs, Path(scratch), tuple(overrides))[0]["images_per_sec"]
    return median(rates["stage"]), median(rates["bare"])


EVALUATED = (1000, 4000)


def evaluation_memory(scratch: Path, counts: tuple[int, ...] = EVALUATED, size: int = 256) -> dict[int, float]:
    """Peak memory (MiB) of `cnn evaluate` scoring the first N of a streamed folder set's test images at
    size x size, per N: a split streamed batch by batch costs the same at any length."""
    from pipeline import tracking

    folder = linked_set(scratch, size, 64, 16, held_out=max(counts))
    model = scratch / f"unet{size}.keras"
    if not model.exists():
        child("save_model", size=size, classes=4, path=str(model))
    peaks = {}
    for count in counts:
        print(f"cnn evaluate on {count} streamed {size}-px test images (peak memory)", flush=True)
        command = [sys.executable, "-m", "pipeline.commands.evaluate", f"source={model}", "use_source_data=false",
                   *folder_overrides(folder, size, f"data.splits.test={count}", "num_examples=2"),
                   f"hydra.run.dir={scratch}/evaluate-{count}", f"tracking.artifact_root={scratch}/art"]  # fmt: skip
        _, peaks[count] = run(command, {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{scratch}/mlflow.db"})
        if not tracking.last_run_metric(f"sqlite:///{scratch}/mlflow.db", "bench", "test_mean_iou"):
            raise RuntimeError(f"cnn evaluate on {count} images logged no test_mean_iou")
    return peaks
