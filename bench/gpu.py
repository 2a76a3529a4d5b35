"""The GPU measured: one script for a GPU host with JAX and the wheelhouse (`make wheelhouse`), no network.

    KERAS_BACKEND=jax python bench/gpu.py --out results/        # on the GPU host, ~6 min
    KERAS_BACKEND=jax python bench/gpu.py --smoke --out /tmp/g  # the same steps on a CPU, tiny sizes (a test)

Measures, each in a fresh process (pipeline.benchmarks.measures, run by pipeline.benchmarks.suite), images/s
after the first (compiling) epoch:
(a) the default U-Net (64 px) and a 256-px U-Net: bfloat16 vs float32, jit_compile on vs off, the train
    stage vs a bare Keras fit; (b) `model=unet_paper` with a 572-px network input (388-px images mirrored to
    572 by overlap-tile, as the paper and NVIDIA's example feed it: 572 in, 388 out), batch 8, bfloat16,
    beside NVIDIA DeepLearningExamples' TF2 U-Net figure (119 img/s, one A100, AMP); (c) the streamed input
    pipeline at 256 px with every core vs the GPU's step rate; (d) where the host has several devices, the
    256-px train stage on all of them (keras.distribution.DataParallel, batch 16 per device) vs on one
    (CUDA_VISIBLE_DEVICES=0): the scaling efficiency. --smoke simulates two CPU devices for (d).
Results are written after every measurement (results.json, results.md under --out), so a run cut short keeps
what it measured; a measurement that would start after --budget seconds is skipped and says so.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NVIDIA_A100_AMP_UNET = 119.0  # img/s, NVIDIA DeepLearningExamples TensorFlow2 UNet_Medical, 1x A100 80GB, AMP, bs 8


TWO_CPU_DEVICES = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}


def device_name() -> str:
    code = "import jax; d = jax.devices()[0]; print(d.platform, getattr(d, 'device_kind', ''))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    return done.stdout.strip() or done.stderr.strip()[-200:]


def device_count(env: dict | None = None) -> int:
    code = "import jax; print(jax.device_count())"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, **(env or {})}
    )
    return int(done.stdout.strip() or 1)


def plan(scratch: Path, smoke: bool):
    """(name, what it runs) in order of value: the headline rows first, so a short budget still gives them."""
    from pipeline.benchmarks.datasets import folder_overrides, linked_set
    from pipeline.benchmarks.suite import child, train_stage
    from pipeline.data.samples import usable_cores

    n64, n256, n388, epochs = (64, 32, 8, 2) if smoke else (2000, 512, 256, 3)
    set64 = linked_set(scratch, 64, min(n64, 512), n64)
    set256 = linked_set(scratch, 256, min(n256, 64), n256)
    set388 = linked_set(scratch, 388, min(n388, 32), n388, held_out=8)
    batch = ("trainer.batch_size=8",) if smoke else ()
    d64 = folder_overrides(set64, 64, *batch, cache="memory")
    d256 = folder_overrides(set256, 256, *batch, "trainer.batch_size=16" if not smoke else "", cache="memory")
    d256 = tuple(o for o in d256 if o)
    paper = folder_overrides(set388, 388, "model=unet_paper", "model.overlap_tile=true", "trainer.batch_size=2"
                             if smoke else "trainer.batch_size=8", cache="memory")  # fmt: skip
    if smoke:  # a CPU cannot afford the paper's 64 base filters at 572 px
        paper += ("model.base_filters=4",)

    def bare(precision, jit, overrides):
        return lambda: child("bare_fit", precision=precision, jit=jit, epochs=epochs, overrides=overrides)[0]

    def stage(overrides, precision="mixed_bfloat16", jit=True, env=None):
        extra = (
            f"trainer.precision={precision}",
            f"trainer.jit_compile={str(jit).lower()}",
            "tracking.log_model=false",
        )
        return lambda: train_stage(epochs, scratch, (*overrides, *extra), env)[0]

    def stream(workers):
        return lambda: child("streaming_pipeline", epochs=epochs, workers=workers,
                              overrides=folder_overrides(set256, 256))[0]  # fmt: skip

    cores = usable_cores()
    every = TWO_CPU_DEVICES if smoke else {}  # the GPU host's own devices, or two simulated CPU ones
    devices = device_count(every)
    scaling = []
    if devices > 1:  # global batch 16 per device; the one-device run sees only the first GPU
        one = {"XLA_FLAGS": ""} if smoke else {"CUDA_VISIBLE_DEVICES": "0"}
        scaling = [
            (f"256px unet train stage bf16 jit, {devices} devices", stage(d256, env=every)),
            ("256px unet train stage bf16 jit, 1 device", stage(d256, env=one)),
        ]
    return [
        ("64px unet bare fit bf16 jit", bare("mixed_bfloat16", True, d64)),
        ("64px unet train stage bf16 jit", stage(d64)),
        ("64px unet bare fit fp32 jit", bare("float32", True, d64)),
        ("256px unet bare fit bf16 jit", bare("mixed_bfloat16", True, d256)),
        ("256px unet train stage bf16 jit", stage(d256)),
        ("256px unet bare fit fp32 jit", bare("float32", True, d256)),
        ("unet_paper 572px in, batch 8, bf16 jit, bare fit", bare("mixed_bfloat16", True, paper)),
        *scaling,
        (f"input pipeline 256px streamed, {cores} workers", stream(cores)),
        ("input pipeline 256px streamed, 1 worker", stream(1)),
        ("64px unet bare fit bf16 no jit", bare("mixed_bfloat16", False, d64)),
        ("256px unet bare fit bf16 no jit", bare("mixed_bfloat16", False, d256)),
    ]


def table(device: str, results: dict) -> str:
    def rate(name):
        found = results.get(name, {})
        values = found.get("images_per_sec")
        return sorted(values)[len(values) // 2] if values else None

    def text(name):
        value = rate(name)
        return f"{value:.0f}" if value is not None else results.get(name, {}).get("note", "not run")

    lines = [f"Device: {device}. KERAS_BACKEND=jax. img/s, median of the epochs after the first.", "",
             "| measurement | img/s |", "|---|---|"]  # fmt: skip
    lines += [f"| {name} | {text(name)} |" for name in results]
    ratios = []
    for a, b, label in [
        ("64px unet bare fit bf16 jit", "64px unet bare fit fp32 jit", "bf16 / fp32, 64 px"),
        ("256px unet bare fit bf16 jit", "256px unet bare fit fp32 jit", "bf16 / fp32, 256 px"),
        ("64px unet bare fit bf16 jit", "64px unet bare fit bf16 no jit", "jit / no jit, 64 px"),
        ("256px unet bare fit bf16 jit", "256px unet bare fit bf16 no jit", "jit / no jit, 256 px"),
        ("64px unet train stage bf16 jit", "64px unet bare fit bf16 jit", "train stage / bare fit, 64 px"),
        ("256px unet train stage bf16 jit", "256px unet bare fit bf16 jit", "train stage / bare fit, 256 px"),
    ]:
        if rate(a) and rate(b):
            ratios.append(f"| {label} | {rate(a) / rate(b):.2f} |")
    paper = rate("unet_paper 572px in, batch 8, bf16 jit, bare fit")
    if paper:
        ratios.append(f"| unet_paper 572 px vs NVIDIA TF2 U-Net on A100 with AMP ({NVIDIA_A100_AMP_UNET:.0f} img/s) | "
                      f"{paper / NVIDIA_A100_AMP_UNET:.2f} |")  # fmt: skip
    streams = [name for name in results if name.startswith("input pipeline") and rate(name)]
    step = rate("256px unet bare fit bf16 jit")
    for name in streams:
        if step:
            ratios.append(f"| {name} / GPU step rate at 256 px | {rate(name) / step:.2f} |")
    several = next((name for name in results if name.endswith(" devices") and rate(name)), None)
    single = rate("256px unet train stage bf16 jit, 1 device")
    if several and single:
        count = int(several.rsplit(", ", 1)[1].split()[0])
        ratios.append(f"| {count} devices / 1 device, 256 px train stage (scaling efficiency: / {count}) | "
                      f"{rate(several) / single:.2f} ({rate(several) / single / count:.0%}) |")  # fmt: skip
    if ratios:
        lines += ["", "| ratio | value |", "|---|---|", *ratios]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("gpu-results"))
    parser.add_argument("--budget", type=float, default=390, help="seconds; later measurements are skipped")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: the same steps on a CPU")
    parser.add_argument("--only", default="", help="only the measurements whose name contains this text")
    args = parser.parse_args()
    os.environ.setdefault("KERAS_BACKEND", "jax")
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # each child takes GPU memory as needed
    args.out.mkdir(parents=True, exist_ok=True)
    start, device, results = time.monotonic(), device_name(), {}
    print(f"device: {device}", flush=True)
    with tempfile.TemporaryDirectory() as scratch:
        for name, measure in plan(Path(scratch), args.smoke):
            if args.only not in name:
                continue
            elapsed = time.monotonic() - start
            if elapsed > args.budget:
                results[name] = {"note": f"skipped: {elapsed:.0f} s > budget {args.budget:.0f} s"}
            else:
                print(f"[{elapsed:4.0f} s] {name}", flush=True)
                try:
                    results[name] = measure()
                except Exception as err:  # one failed measurement must not lose the others
                    results[name] = {"note": f"failed: {str(err).strip().splitlines()[-1][:200]}"}
            (args.out / "results.json").write_text(json.dumps({"device": device, "results": results}, indent=1))
            (args.out / "results.md").write_text(table(device, results))
    print(table(device, results))
    print(f"took {time.monotonic() - start:.0f} s")


if __name__ == "__main__":
    main()
