"""The training input pipeline: a split's samples -> shuffled, decoded, augmented batches, in parallel.

A keras.utils.PyDataset rather than tf.data, so the same pipeline feeds the TensorFlow, JAX and PyTorch
backends, and albumentations (NumPy/OpenCV code) runs without tf.py_function round trips. Keras's own
PyDataset workers run whole batches on a pool and call on_epoch_end from their own thread, so which epoch a
prefetched batch belongs to would depend on timing; they stay 1 (the thread count here is `threads`, not
Keras' `workers`), which also spares the 0.1 s Keras' enqueuer waits at every epoch's end to drain its queue.
Here each batch is a pure function of (seed, epoch, batch index): `data.workers` threads decode and
augment the samples of a batch (PIL decoding and albumentations' OpenCV kernels release the GIL), one
thread prepares the next batches ahead (`prefetch`), and every sample draws its randomness from its own
seed. Whatever the number of workers, and after a resume, the batches are the same.
"""

from __future__ import annotations

import copy
import math
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import albumentations as A
import keras
import numpy as np

from pipeline.data.folders import BadFiles
from pipeline.data.samples import ArraySamples, Samples
from pipeline.errors import DataError
from pipeline.tasks.targets import target_of


class ImageBatches(keras.utils.PyDataset):
    """Batches of (images float32 (B, H, W, C) in [0, 255], targets): masks (B, H, W) int32, labels (B,)
    int32 or boxes (B, 4) float32.

    `samples` is a split (pipeline.data.samples.Samples), or an images array with its `targets`. `target`
    says what the targets are (the task's: "mask", "label" or "boxes"; by default told from the samples).
    Masks and boxes go through the augmentation's geometric transforms with their images; class labels
    are passed through unchanged. A sample whose file turns out unreadable when its batch is decoded
    raises a DataError naming it, or, when `bad` says skip, is left out of its batch and recorded.
    Fit it with shuffle=False: the order is ours, drawn from (seed, epoch), so a training resumed at
    `first_epoch` sees the same batches as an uninterrupted one.
    """

    def __init__(
        self,
        samples: Samples | np.ndarray,
        targets: np.ndarray | None = None,
        batch_size: int = 32,
        augment: A.Compose | None = None,
        shuffle: bool = False,
        seed: int = 0,
        outputs: int = 1,
        first_epoch: int = 0,
        target: str | None = None,
        workers: int = 1,
        prefetch: int = 2,
        bad: BadFiles | None = None,
        defer_errors: bool = False,
        shard: tuple[int, int] = (0, 1),
    ):
        super().__init__()  # workers=1 for Keras: the parallelism is ours (see the module docstring)
        if not isinstance(samples, Samples):
            samples = ArraySamples(samples, targets, target)
        self.samples, self.batch_size, self.augment = samples, batch_size, augment
        self.shuffle, self.seed, self.outputs, self.epoch = shuffle, seed, outputs, first_epoch
        self.target = target or samples.target_kind
        # `threads`, not `workers`: PyDataset.workers is Keras' own setting, and above 1 Keras would run batches
        # on its enqueuer's threads too (and wait 0.1 s at every epoch's end to drain its queue)
        self.threads, self.prefetch, self.bad = max(1, int(workers)), max(0, int(prefetch)), bad or BadFiles()
        self._local = threading.local()  # one copy of the (stateful) augmentation per thread
        self._pool: ThreadPoolExecutor | None = None
        self._ahead: ThreadPoolExecutor | None = None
        self._pending: dict[tuple[int, int], Future] = {}
        self._lock = threading.Lock()
        # defer_errors: a bad file is not raised inside the backend's input pipeline (TensorFlow logs any
        # exception there as a warning with a traceback) but kept in `failure`, the last good batch is served
        # instead, and StopOnDataError raises it from the training loop after that step
        self.defer_errors, self.failure, self._last = defer_errors, None, None
        # (i, n): serve the i-th of n equal slices of every batch (the processes of a multi-process JAX training
        # each feed theirs of one global batch; the split's sizes are checked to share evenly beforehand)
        self.shard = shard

    def __len__(self) -> int:
        return math.ceil(len(self.samples) / self.batch_size)

    def order_of(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(len(self.samples))
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.samples))

    def __getitem__(self, index: int):
        if not 0 <= index < len(self):
            raise IndexError(f"batch {index} of {len(self)}")
        key = (self.epoch, index)
        with self._lock:
            pending = self._pending.pop(key, None)
            if self.prefetch:
                ahead = self._ahead or ThreadPoolExecutor(1, thread_name_prefix="prefetch")
                self._ahead = ahead
                for later in range(index + 1, min(index + 1 + self.prefetch, len(self))):
                    if (self.epoch, later) not in self._pending:
                        self._pending[(self.epoch, later)] = ahead.submit(self.batch, self.epoch, later)
        try:
            self._last = pending.result() if pending is not None else self.batch(*key)
            return self._last
        except DataError as err:
            self.failure = self.failure or err
            if not self.defer_errors:
                raise
            return self._last if self._last is not None else self._placeholder()

    def _placeholder(self):
        """One blank sample: what a deferred failure serves when no good batch came before it."""
        image = np.zeros((1, *self.samples.image_shape), np.float32)
        known = self.samples.targets
        example = known[0] if known is not None and len(known) else None
        targets = target_of(self.target).placeholder(*self.samples.image_shape[:2], example)
        return image, targets if self.outputs == 1 else (targets,) * self.outputs

    def batch(self, epoch: int, index: int):
        """Batch `index` of epoch `epoch`: a function of (seed, epoch, index) alone."""
        slots = range(index * self.batch_size, min((index + 1) * self.batch_size, len(self.samples)))
        part, parts = self.shard
        if parts > 1:
            share = len(slots) // parts
            slots = slots[part * share : (part + 1) * share]
        picked = self.order_of(epoch)[slots.start : slots.stop]
        jobs = [(epoch, slot, int(i)) for slot, i in zip(slots, picked)]
        if self.threads > 1 and len(jobs) > 1:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="batches")
            pairs = list(self._pool.map(self._sample, jobs))
        else:
            pairs = [self._sample(job) for job in jobs]
        pairs = [pair for pair in pairs if pair is not None]
        if not pairs:
            raise DataError(f"batch {index} of epoch {epoch}: every image in it is a bad file (data.on_bad_file=skip)")
        images = np.stack([image for image, _ in pairs])
        targets = np.stack([np.asarray(t) for _, t in pairs])
        if images.ndim == 3:  # albumentations drops a single channel axis
            images = images[..., None]
        targets = targets.astype(np.int32 if np.issubdtype(targets.dtype, np.integer) else np.float32)
        # a model with auxiliary heads gets the same targets for every output
        return images.astype(np.float32), targets if self.outputs == 1 else (targets,) * self.outputs

    def _sample(self, job: tuple[int, int, int]):
        epoch, slot, i = job
        try:
            image, target = self.samples.read(i)
        except DataError as err:
            self.bad.handle(err, Path(self.samples.name(i)))  # raises unless data.on_bad_file=skip
            return None
        state = np.random.SeedSequence([self.seed, epoch, slot]).generate_state(2)
        crop = self.samples.random_crop
        if crop is not None:
            image, target = _random_crop(image, target, crop, self.target, np.random.default_rng(state[0]))
        if self.augment is None:
            return image, target
        augment = getattr(self._local, "augment", None)
        if augment is None:
            augment = self._local.augment = copy.deepcopy(self.augment)
        augment.set_random_seed(int(state[1]))
        return target_of(self.target).augment(augment, image, target)

    def on_epoch_begin(self):
        pass  # the order and the augmentation are drawn per batch from (seed, epoch, index)

    def on_epoch_end(self):
        with self._lock:
            for future in self._pending.values():
                future.cancel()
            self._pending.clear()
        self.epoch += 1

    def close(self) -> None:
        """Stop the worker threads (also done when the object is collected)."""
        for pool in (getattr(self, "_pool", None), getattr(self, "_ahead", None)):
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
        self._pool = self._ahead = None

    def __del__(self):
        self.close()


class StopOnDataError(keras.callbacks.Callback):
    """Raises, from the training loop, the bad file an ImageBatches(defer_errors=True) met: before the epoch
    ends, so the interrupted epoch is neither checkpointed nor recorded."""

    def __init__(self, *batches: ImageBatches):
        super().__init__()
        self.batches = batches

    def _check(self, batch=None, logs=None):
        for batches in self.batches:
            if batches.failure is not None:
                raise batches.failure

    on_train_batch_end = on_test_batch_end = _check


def _random_crop(image: np.ndarray, target, size: int, kind: str, rng: np.random.Generator):
    """A size x size window at a random place (the train split under data.fit=crop); a mask follows it,
    a box is re-expressed in the window and clipped to it."""
    height, width = image.shape[:2]
    top, left = int(rng.integers(0, height - size + 1)), int(rng.integers(0, width - size + 1))
    image = image[top : top + size, left : left + size]
    return image, target_of(kind).crop(target, top, left, size, height, width)
