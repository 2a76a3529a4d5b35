"""The table of `cnn bench`: each row a measurement, its values, their ratio and the target it is held to."""

import os
import platform

from pipeline.benchmarks.suite import VARIANT_IMAGES, median


def config_error_row(times: dict[str, list[float]]) -> tuple[str, str, float, str]:
    seconds = {override: median(values) for override, values in times.items()}
    shown = ", ".join(f"`{override}` {value:.2f} s" for override, value in seconds.items())
    return "config error, wall time (s, the slowest of three bad overrides)", shown, max(seconds.values()), "≤ 1.5"


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


def evaluation_row(peaks: dict) -> tuple[str, str, float, str]:
    small, large = (peaks.get(n, peaks.get(str(n))) for n in (1000, 4000))
    name = "peak memory: `cnn evaluate`, 4,000 vs 1,000 streamed 256-px test images (U-Net, folder set)"
    return name, f"{large:.0f} vs {small:.0f} MiB", large / small, "≤ 1.15"


def stage_row(stage: float, bare: float) -> tuple[str, str, float, str]:
    return "train stage vs bare `model.fit`", f"{stage:.0f} vs {bare:.0f} img/s", stage / bare, "≥ 0.95"


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
    if "evaluate_rss" in m:
        rows.append(evaluation_row(m["evaluate_rss"]))
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
