"""The data profile: what a run is about to train on, and one-line warnings where a person would want one.

Computed from a data config's split indexes before anything trains (pipeline.training.job), logged as
data/profile.json and data/profile.png, summarised in the log. Per split: how many samples, the kinds of
file (bit depth, grey or colour, from the headers), image sizes, class frequencies (labels from the index;
mask pixels from a sample of the masks), and how the intensity mapping treats the values. Then warnings:
too few steps per epoch for the batch size, a class missing from a split, strong class imbalance, images far
from data.image_size, mixed bit depths, 16-bit images that use a sliver of their range, values clipped by
the mapping. `data.strict=true` turns the warnings into one error before training.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from pipeline.data.pixels import Intensity, bit_depth, count_kinds, read_header, read_values
from pipeline.data.samples import Samples
from pipeline.errors import DataError
from pipeline.tasks.targets import target_of

log = logging.getLogger(__name__)
MIN_STEPS = 10  # fewer optimizer steps per epoch than this trains "into nothing" in a few epochs
IMBALANCE = 20.0  # most / least frequent class
MASK_SAMPLE = 64  # masks decoded per split for pixel frequencies
VALUE_SAMPLE = 16  # images read at full depth per split for their value range


def _paths(samples: Samples) -> list[Path] | None:
    items = getattr(samples, "items", None)
    return [Path(item[0]) for item in items] if items is not None else None


def _headers(paths: list[Path]) -> tuple[dict[str, int], list[tuple[int, int]]]:
    sizes = [size for size in (read_header(path)[1] for path in paths) if size]
    return count_kinds(paths), sizes


def _sample(count: int, limit: int) -> list[int]:
    return list(range(count)) if count <= limit else np.linspace(0, count - 1, limit).round().astype(int).tolist()


def _class_counts(samples: Samples, num_classes: int, ignore: int | None) -> tuple[list[int], int, bool]:
    """(count per class, how many samples they come from, sampled?): labels of every sample, or the pixels of
    a sample of the masks."""
    targets = samples.targets
    kind = target_of(samples.target_kind)
    if kind.image_class and targets is not None:
        counts = np.bincount(np.asarray(targets, int), minlength=num_classes)[:num_classes]
        return counts.tolist(), len(targets), False
    if not kind.spatial:  # boxes: no class to count
        return [], 0, False
    if targets is not None:  # masks in memory: every pixel
        valid = targets[targets != ignore] if ignore is not None else targets
        return np.bincount(valid.ravel().astype(int), minlength=num_classes)[:num_classes].tolist(), len(targets), False
    picked = _sample(len(samples), MASK_SAMPLE) if targets is None else list(range(len(samples)))
    counts = np.zeros(num_classes, np.int64)
    decoder = getattr(getattr(samples, "decode", None), "masks", None)  # a file set's MaskReader: no image decode
    for i in picked:
        mask = decoder(samples.items[i][1]) if decoder is not None else np.asarray(samples.read(i)[1])
        valid = mask[mask != ignore] if ignore is not None else mask
        counts += np.bincount(valid.ravel().astype(int), minlength=num_classes)[:num_classes]
    return counts.tolist(), len(picked), len(picked) < len(samples)


def _values(paths: list[Path], intensity: Intensity) -> dict | None:
    """Value range of a sample of files at their own depth, and the share the mapping clips; None for 8-bit auto."""
    lows, highs, clipped, depth_max = [], [], [], None
    for i in _sample(len(paths), VALUE_SAMPLE):
        try:
            with Image.open(paths[i]) as img:
                depth = bit_depth(img)  # before load, which forgets it
                if intensity.mode == "auto" and depth == 8:
                    continue
                img.load()
                values = read_values(paths[i], img, depth)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
            continue
        lows.append(float(values.min()))
        highs.append(float(values.max()))
        depth_max = 65535.0 if values.dtype == np.uint16 else 1.0 if values.dtype.kind == "f" else 255.0
        try:
            clipped.append(intensity.clipped_fraction(values, paths[i]))
        except DataError:
            clipped.append(math.nan)
    if not lows:
        return None
    return {"min": min(lows), "max": max(highs), "type_max": depth_max, "clipped_fraction": float(np.nanmean(clipped))}


def profile(
    splits: dict[str, Samples],
    classes: list[str],
    batch_size: int,
    image_size: int | None,
    intensity: Intensity,
    ignore_label: int | None = None,
) -> dict:
    """The profile of a data config's splits (see the module docstring): {"splits": {...}, "intensity": ...,
    "warnings": [...]}. Reads headers and samples only; nothing is decoded in full."""
    report: dict = {"classes": list(classes), "intensity": str(intensity), "splits": {}, "warnings": []}
    warnings = report["warnings"]
    all_kinds: dict[str, int] = {}
    for split, samples in splits.items():
        paths = _paths(samples)
        entry: dict = {"count": len(samples), "image_shape": list(samples.image_shape)}
        if paths is not None:
            kinds, sizes = _headers(paths)
            entry["kinds"] = kinds
            if sizes:
                widths, heights = zip(*sizes)
                entry["sizes"] = {"min": [min(widths), min(heights)], "median": [int(np.median(widths)),
                                  int(np.median(heights))], "max": [max(widths), max(heights)]}  # fmt: skip
            values = _values(paths, intensity)
            if values:
                entry["values"] = values
        else:
            entry["kinds"] = {f"8-bit array ({samples.image_shape[-1]} channel{'s' * (samples.image_shape[-1] > 1)})":
                              len(samples)}  # fmt: skip
        for kind, n in entry["kinds"].items():
            all_kinds[kind] = all_kinds.get(kind, 0) + n
        counts, seen, sampled = _class_counts(samples, len(classes), ignore_label)
        if counts:
            entry["class_counts"] = dict(zip(classes, counts))
            entry["class_counts_from"] = f"{'a sample of ' if sampled else ''}{seen} {samples.target_kind}s"
        report["splits"][split] = entry
        warnings += _split_warnings(split, entry, classes, image_size, intensity)
    train = report["splits"].get("train")
    if train:
        steps = math.ceil(train["count"] / batch_size)
        report["steps_per_epoch"] = steps
        if steps < MIN_STEPS:
            fix = max(1, train["count"] // MIN_STEPS)
            warnings.append(
                f"train split: {train['count']} images at trainer.batch_size={batch_size} is {steps} optimizer "
                f"step{'s' * (steps != 1)} per epoch (fewer than {MIN_STEPS}): it trains into little; valid: "
                f"trainer.batch_size={fix} ({math.ceil(train['count'] / fix)} steps), and more trainer.epochs"
            )
    report["kinds"] = all_kinds
    depths = sorted({kind.split()[0] for kind in all_kinds if kind != "unreadable" and "array" not in kind})
    report["bit_depths"] = depths
    if len(depths) > 1:
        shown = ", ".join(f"{n} {kind}" for kind, n in sorted(all_kinds.items()))
        warnings.append(
            f"mixed bit depths ({shown}): data.intensity.mode={intensity.mode} maps each file type by its own "
            "range; valid: data.intensity.mode=range with the sensor's data.intensity.range, or percentile, to "
            "treat them alike"
        )
    return report


def _split_warnings(split: str, entry: dict, classes: list[str], image_size: int | None, intensity: Intensity):
    warnings = []
    counts = entry.get("class_counts")
    if counts:
        missing = [name for name, n in counts.items() if n == 0]
        if missing:
            warnings.append(
                f"{split} split: no {', '.join(missing)} in {entry['class_counts_from']}; a class never seen is "
                "never learnt (train) or never scored (val, test); valid: add examples of it, or drop it from "
                "data.classes"
            )
        present = [n for n in counts.values() if n > 0]
        if split == "train" and len(present) > 1 and max(present) / min(present) > IMBALANCE:
            total = sum(present)
            weights = [round(total / (len(present) * n), 2) if n else 0.0 for n in counts.values()]
            warnings.append(
                f"train split: classes are imbalanced {max(present) / min(present):.0f}:1 ({counts}); "
                f"valid: loss.class_weights={weights} (inverse frequency) to weigh the rare ones up"
            )
    sizes = entry.get("sizes")
    if sizes and image_size:
        side = min(sizes["median"])
        if side < image_size / 2 or side > image_size * 4:
            warnings.append(
                f"{split} split: images are about {sizes['median'][0]}x{sizes['median'][1]} (median), resized to "
                f"data.image_size={image_size} (x{image_size / side:.2g}); valid: a data.image_size nearer their size"
            )
    values = entry.get("values")
    if values and intensity.mode == "auto" and values["type_max"] > 255 and values["max"] < values["type_max"] / 8:
        share = 100 * values["max"] / values["type_max"]
        warnings.append(
            f"{split} split: values {values['min']:g}..{values['max']:g} use {share:.1f} % of their type's range "
            f"(0..{values['type_max']:g}), so data.intensity.mode=auto maps them to a dim 0..{255 * share / 100:.0f}; "
            f"valid: data.intensity.mode=range data.intensity.range=[0,{values['max']:g}] (the sensor's range), "
            "or data.intensity.mode=percentile"
        )
    if values and intensity.mode == "range" and values["clipped_fraction"] > 0.01:  # percentile clips by definition
        warnings.append(
            f"{split} split: data.intensity ({intensity}) clips {100 * values['clipped_fraction']:.1f} % of the "
            f"values (found {values['min']:g}..{values['max']:g}); valid: a data.intensity.range that holds them"
        )
    return warnings


def summary_lines(report: dict) -> list[str]:
    """One line per split for the log."""
    lines = []
    for split, entry in report["splits"].items():
        kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(entry["kinds"].items()))
        sizes = entry.get("sizes")
        size = f", median {sizes['median'][0]}x{sizes['median'][1]}" if sizes else ""
        counts = entry.get("class_counts")
        share = ""
        if counts and sum(counts.values()):
            total = sum(counts.values())
            share = "; " + ", ".join(f"{name} {100 * n / total:.1f} %" for name, n in counts.items())
        lines.append(f"{split}: {entry['count']} ({kinds}{size}){share}")
    lines.append(f"intensity: {report['intensity']}")
    return lines


def figure(report: dict):
    """Class frequencies per split (share of pixels or labels) beside each split's kinds of file."""
    from pipeline.plots import viz

    splits = report["splits"]
    classes = report["classes"]
    fig, (bars, text) = viz.plt.subplots(1, 2, figsize=(11, 3.6), gridspec_kw={"width_ratios": [3, 2]})
    width = 0.8 / max(1, len(splits))
    for k, (split, entry) in enumerate(splits.items()):
        counts = entry.get("class_counts") or {}
        total = sum(counts.values()) or 1
        shares = [counts.get(name, 0) / total for name in classes]
        bars.bar(np.arange(len(classes)) + k * width, shares, width, label=f"{split} ({entry['count']})")
    bars.set_xticks(np.arange(len(classes)) + width * (len(splits) - 1) / 2, classes, rotation=30, ha="right")
    bars.set_ylabel("share of pixels or labels")
    bars.set_title("class frequencies")
    bars.legend(fontsize=8)
    text.axis("off")
    lines = summary_lines(report) + [f"! {w[:110]}" for w in report["warnings"]]
    text.text(0, 1, "\n".join(lines), va="top", fontsize=7, family="monospace", wrap=True)
    fig.tight_layout()
    return fig


def check_profile(splits: dict[str, Samples], classes: list[str], batch_size: int, data, intensity: Intensity) -> dict:
    """The profile of a data config's splits, summarised in the log with its warnings; with data.strict=true
    any warning stops the run (one DataError listing them)."""
    report = profile(splits, classes, batch_size, data.get("image_size"), intensity, data.get("ignore_label"))
    for line in summary_lines(report):
        log.info("data %s", line)
    for warning in report["warnings"]:
        log.warning("data: %s", warning)
    if report["warnings"] and data.get("strict", False):
        listed = " | ".join(report["warnings"])
        raise DataError(f"data.strict=true and the data profile warns: {listed}")
    return report
