"""The training input pipeline: in-memory arrays -> shuffled, augmented batches.

A keras.utils.PyDataset rather than tf.data, so the same pipeline feeds TensorFlow, JAX and PyTorch
backends, and albumentations (NumPy/OpenCV code) runs without tf.py_function round trips.
"""

import math

import albumentations as A
import keras
import numpy as np


class SegmentationBatches(keras.utils.PyDataset):
    """Batches of (images float32 (B, H, W, 3) in [0, 255], masks int32 (B, H, W))."""

    def __init__(
        self,
        images: np.ndarray,
        masks: np.ndarray,
        batch_size: int,
        augment: A.Compose | None = None,
        shuffle: bool = False,
        seed: int = 0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.images, self.masks = images, masks
        self.batch_size, self.augment, self.shuffle = batch_size, augment, shuffle
        self.rng = np.random.default_rng(seed)
        self.order = self.rng.permutation(len(images)) if shuffle else np.arange(len(images))

    def __len__(self) -> int:
        return math.ceil(len(self.images) / self.batch_size)

    def __getitem__(self, index: int):
        picked = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        images, masks = self.images[picked], self.masks[picked]
        if self.augment is not None:
            pairs = [self.augment(image=image, mask=mask) for image, mask in zip(images, masks)]
            images = np.stack([p["image"] for p in pairs])
            masks = np.stack([p["mask"] for p in pairs])
        return images.astype(np.float32), masks.astype(np.int32)

    def on_epoch_end(self):
        if self.shuffle:
            self.order = self.rng.permutation(len(self.images))
