"""Scoring a split batch by batch: one loop for every task and every model (Keras, or an exported artefact in its
own runtime), so a 100,000-image test split is scored in the memory of a few batches.

The task supplies a tally (`task.tally(...)`): it adds each batch's predictions to what the scores need
(a confusion matrix, per-image rows), keeps only the pictures it will draw (the first, the best, the worst:
`TopK`), and at the end gives the `Report`. The headline's confidence interval is a percentile bootstrap over
test images (`interval`): images are resampled, not pixels, because pixels of one image are not independent.
"""

import heapq
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import numpy as np

from pipeline.data.folders import BadFiles
from pipeline.data.samples import ArraySamples, Samples, read_or_skip
from pipeline.errors import ConfigError, DataError
from pipeline.tasks.base import Report

log = logging.getLogger(__name__)

CONFIDENCE = 0.95  # of the interval logged as <headline>_ci_low and _ci_high
RESAMPLES = 1000


class Tally(Protocol):
    def add(self, start: int, images: np.ndarray, targets: np.ndarray, outputs: np.ndarray) -> None:
        """One batch: its first sample's index in the split, the images, their targets, the model's outputs."""

    def headline_of(self, indices: np.ndarray) -> float:
        """The headline score over the images at `indices` (with repeats: a bootstrap resample)."""

    def report(self) -> Report: ...


class Stacked:
    """Per-image rows added batch by batch, concatenated once when read (what a tally keeps of every image)."""

    def __init__(self):
        self._parts: list[np.ndarray] = []

    def add(self, rows: np.ndarray) -> None:
        self._parts.append(np.asarray(rows))

    def all(self) -> np.ndarray:
        if len(self._parts) > 1:
            self._parts = [np.concatenate(self._parts)]
        return self._parts[0]


class TopK:
    """The k entries with the highest key offered so far (on equal keys, the earlier one), each kept with its
    pictures: what a report draws of a split it never holds whole."""

    def __init__(self, k: int):
        self.k, self._heap = k, []

    def offer(self, key: float, index: int, *payload) -> None:
        if self.k <= 0 or not np.isfinite(key):
            return
        entry = (float(key), -index, payload)  # index unique: payloads are never compared
        if len(self._heap) < self.k:
            heapq.heappush(self._heap, entry)
        elif entry[:2] > self._heap[0][:2]:
            heapq.heapreplace(self._heap, entry)

    def __len__(self) -> int:
        return len(self._heap)

    def columns(self) -> list[np.ndarray]:
        """The payloads' fields stacked, highest key first."""
        entries = sorted(self._heap, key=lambda e: e[:2], reverse=True)
        return [np.stack(field) for field in zip(*(payload for _, _, payload in entries))]


def interval(tally: Tally, count: int, confidence: float = CONFIDENCE, resamples: int = RESAMPLES, seed: int = 0):
    """(low, high): scipy's percentile bootstrap of the headline over the split's images, reproducible by seed;
    NaNs where the split has fewer than two images."""
    from scipy.stats import bootstrap

    if count < 2:
        return float("nan"), float("nan")
    result = bootstrap((np.arange(count),), lambda idx: tally.headline_of(np.asarray(idx, int)), n_resamples=resamples,
                       confidence_level=confidence, method="percentile", vectorized=False,
                       rng=np.random.default_rng(seed))  # fmt: skip
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def batches(samples: Samples, batch_size: int, bad: BadFiles | None = None, workers: int = 1, desc: str = ""):
    """(first index, images, targets) of consecutive batches, each decoded in `workers` threads while the one
    before is scored; bad files raised or skipped by `bad`."""
    bad = bad or BadFiles()

    def decode(start):
        chosen = range(start, min(start + batch_size, len(samples)))
        pairs = [pair for i in chosen if (pair := read_or_skip(samples, i, bad)) is not None]
        if not pairs:
            return start, None, None
        return start, np.stack([p[0] for p in pairs]), np.stack([np.asarray(p[1]) for p in pairs])

    from tqdm.auto import tqdm

    starts = range(0, len(samples), batch_size)
    with ThreadPoolExecutor(max(1, workers)) as pool:
        pending = [pool.submit(decode, s) for s in starts[: max(1, workers)]]  # a few batches ahead
        following = iter(starts[max(1, workers) :])
        for _ in tqdm(starts, desc=desc or "scoring", unit="batch", disable=len(starts) < 8, leave=False):
            start, images, targets = pending.pop(0).result()
            if (nxt := next(following, None)) is not None:
                pending.append(pool.submit(decode, nxt))
            if images is not None:
                yield start, images, targets


def evaluate(
    task,
    model,
    samples: Samples | tuple[np.ndarray, np.ndarray],
    classes: list[str],
    batch_size: int = 32,
    num_examples: int = 4,
    tta: bool = False,
    ignore_label: int | None = None,
    transform: Callable[[np.ndarray], np.ndarray] | None = None,
    bad: BadFiles | None = None,
    workers: int = 1,
    confidence: bool = True,
    desc: str = "",
) -> Report:
    """The task's scores over a split (Samples streamed from its files, or (images, targets) in memory) from
    `model.predict` batch by batch; `transform` changes each batch of images first (a shift); with `confidence`,
    the headline's bootstrap interval as <headline>_ci_low and _ci_high; num_examples=0: scores only."""
    if isinstance(samples, tuple):
        samples = ArraySamples(*samples, target_kind=task.target)
    tally = task.tally(classes, num_examples=num_examples, ignore_label=ignore_label)
    expected = tuple(model.inputs[0].shape[1:]) if hasattr(model, "inputs") else None
    if expected is not None and tuple(samples.image_shape) != expected:
        raise ConfigError(f"data.image_size gives {tuple(samples.image_shape)} images but the model expects "
                          f"{expected}; valid: data.image_size={expected[0]} (its training size)")  # fmt: skip
    seen = 0
    for start, images, targets in batches(samples, batch_size, bad, workers, desc):
        if expected is not None and images.shape[1:] != expected:
            raise DataError(f"{samples.name(start)}: decodes to {images.shape[1:]} images but the model expects "
                            f"{expected}; valid: data.image_size={expected[0]} (its training size)")  # fmt: skip
        x = images.astype(np.float32) if transform is None else transform(images.astype(np.float32))
        tally.add(seen, images, targets, task.outputs(model, x, tta))
        seen += len(images)
    if seen == 0:
        raise DataError(f"{desc or 'split'}: no usable images ({len(samples)} skipped as bad files)")
    report = tally.report()
    report.count = seen
    if confidence:
        low, high = interval(tally, seen)
        report.scores[f"{report.headline}_ci_low"], report.scores[f"{report.headline}_ci_high"] = low, high
    return report
