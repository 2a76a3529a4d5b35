"""The training input pipeline: in-memory arrays -> shuffled, augmented batches.

A keras.utils.PyDataset rather than tf.data, so the same pipeline feeds TensorFlow, JAX and PyTorch
backends, and albumentations (NumPy/OpenCV code) runs without tf.py_function round trips.
"""

import math

import albumentations as A
import keras
import numpy as np


class ImageBatches(keras.utils.PyDataset):
    """Batches of (images float32 (B, H, W, C) in [0, 255], targets int32): masks (B, H, W) or labels (B,).

    `target` says what the targets are (the task's: "mask", "label" or "boxes"; by default told from their
    shape). Masks and boxes go through the augmentation's geometric transforms with their images; class
    labels are passed through unchanged.
    Each epoch's order and augmentation are drawn from (seed, epoch) alone, so a training resumed at
    `first_epoch` sees the same batches as an uninterrupted one (fit it with shuffle=False: the order is ours).
    """

    def __init__(
        self,
        images: np.ndarray,
        targets: np.ndarray,
        batch_size: int,
        augment: A.Compose | None = None,
        shuffle: bool = False,
        seed: int = 0,
        outputs: int = 1,
        first_epoch: int = 0,
        target: str | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.images, self.targets = images, targets
        self.batch_size, self.augment, self.shuffle, self.outputs = batch_size, augment, shuffle, outputs
        self.seed, self.epoch = seed, first_epoch
        self.target = target or {3: "mask", 2: "boxes"}.get(np.ndim(targets), "label")
        self.order = np.arange(len(images))
        self.on_epoch_begin()

    def __len__(self) -> int:
        return math.ceil(len(self.images) / self.batch_size)

    def __getitem__(self, index: int):
        picked = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        images, targets = self.images[picked], self.targets[picked]
        if self.augment is not None and self.target == "mask":
            pairs = [self.augment(image=image, mask=mask) for image, mask in zip(images, targets)]
            images = np.stack([p["image"] for p in pairs])
            targets = np.stack([p["mask"] for p in pairs])
        elif self.augment is not None and self.target == "boxes":
            images, targets = _augment_boxes(self.augment, images, targets)
        elif self.augment is not None:
            images = np.stack([self.augment(image=image)["image"] for image in images])
        if images.ndim == 3:  # albumentations drops a single channel axis
            images = images[..., None]
        targets = targets.astype(np.int32 if np.issubdtype(targets.dtype, np.integer) else np.float32)
        # a model with auxiliary heads gets the same targets for every output
        return images.astype(np.float32), targets if self.outputs == 1 else (targets,) * self.outputs

    def on_epoch_begin(self):
        if self.shuffle:
            self.order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.images))
        if self.augment is not None:
            self.augment.set_random_seed(int(np.random.SeedSequence([self.seed, self.epoch]).generate_state(1)[0]))

    def on_epoch_end(self):
        self.epoch += 1


def _augment_boxes(augment: A.Compose, images: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each image with its one box moved by the same geometric transforms; a sample whose box the
    transforms pushed out of the frame is kept as it was."""
    moved_images, moved_boxes = [], []
    for image, box in zip(images, boxes):
        out = augment(image=image, bboxes=np.asarray(box, np.float32)[None])
        if len(out["bboxes"]) == 1:
            moved_images.append(out["image"])
            moved_boxes.append(np.asarray(out["bboxes"][0][:4], np.float32))
        else:
            moved_images.append(image)
            moved_boxes.append(np.asarray(box, np.float32))
    return np.stack(moved_images), np.stack(moved_boxes)
