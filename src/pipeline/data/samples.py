"""A split as an index of samples, decoded when a batch needs them: memory stays bounded whatever its size.

A `Samples` is what a data source gives for one split: its length, the shape its images come in, and
`read(i)` -> (image uint8 (H, W, C), target). Targets are class labels, boxes or masks; labels and boxes
are known from the index (`targets`), masks only once decoded. Two kinds:

- `ArraySamples`: arrays already in memory (bundled and generated sets, or a split decoded once: the cache).
- `FileSamples`: (image file, target) pairs, each decoded (and resized to data.image_size) on `read`.

`cache_splits` decides, per split and from the index alone, whether a split is decoded into memory once
(`data.cache=memory`, or `auto` within `data.cache_budget`) or streamed from disk on every epoch (`none`).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from pipeline.config.options import CACHE_MODES
from pipeline.data.folders import BadFiles
from pipeline.errors import ConfigError, DataError
from pipeline.tasks.targets import target_of

log = logging.getLogger(__name__)
UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 2**10, "kib": 2**10, "m": 2**20, "mb": 2**20, "mib": 2**20}
UNITS.update({"g": 2**30, "gb": 2**30, "gib": 2**30, "t": 2**40, "tb": 2**40, "tib": 2**40})


class Samples:
    """One split: len, image_shape (H, W, C) after decoding, target kind, read(i) -> (image, target)."""

    image_shape: tuple[int, int, int]
    target_kind: str  # "mask" | "label" | "boxes"
    random_crop: int | None = None  # train split with data.fit=crop: images come larger, cropped per batch

    def __len__(self) -> int:
        raise NotImplementedError

    def read(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    @property
    def targets(self) -> np.ndarray | None:
        """Labels or boxes of every sample, known without decoding; None for masks."""
        raise NotImplementedError

    def subset(self, indices: Sequence[int]) -> Samples:
        raise NotImplementedError

    def name(self, i: int) -> str:
        return f"sample {i}"

    def nbytes(self) -> int:
        """Memory the decoded split takes (images uint8, plus masks), estimated from the index."""
        height, width, channels = self.image_shape
        return len(self) * (height * width * channels + target_of(self.target_kind).nbytes(height, width))


class ArraySamples(Samples):
    """Images (N, H, W, C) uint8 and targets in memory; images may be a list of arrays of different sizes."""

    def __init__(self, images, targets: np.ndarray, target_kind: str | None = None, random_crop: int | None = None):
        self.images, self._targets = images, np.asarray(targets)
        self.target_kind = target_kind or {3: "mask", 2: "boxes"}.get(self._targets.ndim, "label")
        first = images[0] if len(images) else np.zeros((1, 1, 1), np.uint8)
        self.image_shape = tuple(first.shape) if random_crop is None else (random_crop, random_crop, first.shape[-1])
        self.random_crop = random_crop

    def __len__(self) -> int:
        return len(self.images)

    def read(self, i: int):
        return self.images[i], self._targets[i]

    @property
    def targets(self):
        ragged = not target_of(self.target_kind).in_index and self._targets.dtype == object  # masks of mixed sizes
        return None if ragged else self._targets

    def subset(self, indices):
        indices = np.asarray(indices, dtype=int)
        images = self.images[indices] if isinstance(self.images, np.ndarray) else [self.images[i] for i in indices]
        return ArraySamples(images, self._targets[indices], self.target_kind, self.random_crop)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(self.images), self._targets


class FileSamples(Samples):
    """(image path, target) pairs: the target a class label, a box, or a mask's path. `decode(path, target)`
    returns the decoded (image, target) or raises a DataError naming the file."""

    def __init__(
        self,
        items: list[tuple[Path, object]],
        decode: Callable[[Path, object], tuple[np.ndarray, np.ndarray]],
        image_shape: tuple[int, int, int],
        target_kind: str,
        random_crop: int | None = None,
    ):
        self.items, self.decode, self.image_shape = items, decode, tuple(image_shape)
        self.target_kind, self.random_crop = target_kind, random_crop

    def __len__(self) -> int:
        return len(self.items)

    def read(self, i: int):
        path, target = self.items[i]
        return self.decode(path, target)

    @property
    def targets(self):
        if not target_of(self.target_kind).in_index:  # masks: files, decoded when a batch needs them
            return None
        return np.asarray([target for _, target in self.items])

    def subset(self, indices):
        return FileSamples([self.items[i] for i in indices], self.decode, self.image_shape, self.target_kind,
                           self.random_crop)  # fmt: skip

    def name(self, i: int) -> str:
        return str(self.items[i][0])


def usable_cores() -> int:
    """The cores this process may run on (a cluster job's allocation, not the whole node)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def worker_count(workers) -> int:
    """data.workers: `auto` (the usable cores) or a positive integer."""
    if workers in (None, "auto"):
        return usable_cores()
    if isinstance(workers, int) and not isinstance(workers, bool) and workers >= 1:
        return workers
    raise ConfigError(f"data.workers={workers!r} is invalid; valid: auto or a positive integer")


def parse_bytes(value) -> int:
    """2GiB, 512MB, 1.5g or a plain number of bytes -> bytes."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return int(value)
    match = re.fullmatch(r"\s*([0-9.]+)\s*([a-zA-Z]*)\s*", str(value))
    if match and match.group(2).lower() in UNITS:
        try:
            return int(float(match.group(1)) * UNITS[match.group(2).lower()])
        except ValueError:
            pass
    raise ConfigError(f"data.cache_budget={value!r} is invalid; valid: a size such as 2GiB, 512MiB or 1000000")


def read_or_skip(samples: Samples, i: int, bad: BadFiles) -> tuple[np.ndarray, np.ndarray] | None:
    """Sample i decoded, or None when it is a bad file `bad` skips (else its DataError is raised)."""
    try:
        return samples.read(i)
    except DataError as err:
        bad.handle(err, Path(samples.name(i)))
        return None


def decode_all(samples: Samples, bad: BadFiles | None = None, workers: int = 1, desc: str = "") -> ArraySamples:
    """Every sample decoded into memory (in `workers` threads), bad files raised or skipped by `bad`."""
    if isinstance(samples, ArraySamples):
        return samples
    bad = bad or BadFiles()

    def one(i):
        return read_or_skip(samples, i, bad)

    from tqdm.auto import tqdm

    with ThreadPoolExecutor(max(1, workers)) as pool:
        decoded = list(tqdm(pool.map(one, range(len(samples))), total=len(samples), desc=desc or "decoding",
                            disable=len(samples) < 200, leave=False))  # fmt: skip
    kept = [pair for pair in decoded if pair is not None]
    if not kept:
        raise DataError(f"{desc or 'split'}: no usable images ({len(samples)} skipped as bad files)")
    images = [image for image, _ in kept]
    if len({image.shape for image in images}) == 1:
        images = np.stack(images)
    elif samples.random_crop is None:
        raise DataError(f"{samples.name(0)}: images differ in size; set data.image_size to resize them to one size")
    targets = np.stack([np.asarray(target) for _, target in kept])
    return ArraySamples(images, targets, samples.target_kind, samples.random_crop)


def cache_splits(
    splits: dict[str, Samples], cache: str = "auto", budget="2GiB", bad: BadFiles | None = None, workers: int = 1
) -> dict[str, Samples]:
    """Each split decoded into memory (data.cache=memory, or auto when its decoded size, estimated from the
    index, is within the budget) or left streaming from its files (none, or auto over the budget)."""
    if cache not in CACHE_MODES:
        raise ConfigError(f"data.cache={cache!r} is invalid; valid: {', '.join(CACHE_MODES)}")
    limit = parse_bytes(budget)
    cached = {}
    for split, samples in splits.items():
        if isinstance(samples, FileSamples) and (cache == "memory" or (cache == "auto" and samples.nbytes() <= limit)):
            samples = decode_all(samples, bad, workers, desc=f"decoding {split}")
        elif isinstance(samples, FileSamples):
            log.info("%s split: %d images (%.2f GiB decoded) streamed from disk each epoch (data.cache=%s, budget "
                     "%.2f GiB)", split, len(samples), samples.nbytes() / 2**30, cache, limit / 2**30)  # fmt: skip
        cached[split] = samples
    return cached
