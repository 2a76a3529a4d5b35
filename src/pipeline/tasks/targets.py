"""The kinds of target a task learns, each the one place that knows its shape: masks (a class per pixel),
labels (a class per image), boxes (one box per image, as fractions of its size) and values (numbers per
image, regressed).

A `Target` says what the data and training code would otherwise branch on: its batch array's shape and dtype,
the memory it takes, whether a split's index already holds it, how a crop and albumentations move it with
its image, the bounding-box parameters albumentations needs, the logged model's output name, and whether a
network's feature maps (spatial) or its pooled features serve it. Tasks name their target (`Task.target`);
`target_of(kind)` gives the object. NumPy only: albumentations is imported where a box is moved.
"""

from __future__ import annotations

import numpy as np


class Target:
    kind: str
    spatial = False  # a value per pixel: the target is (H, W) and moves with every geometric transform
    in_index = True  # a split's index holds every target (labels, boxes) rather than files to decode (masks)
    image_class = False  # the target is the image's class (k-per-class subsets, label counts, auxiliary heads)
    croppable = True  # a crop of the image has a target of its own (data.fit=crop)
    served_output = "probabilities"  # the logged model's output name
    served_meaning = "(batch, classes) softmax probabilities per image; argmax is the index into class_names"
    dtype = np.int32

    def shape(self, height: int, width: int) -> tuple[int, ...]:
        """One sample's target shape."""
        return ()

    def nbytes(self, height: int, width: int) -> int:
        """Memory one decoded target takes (an estimate, from the index)."""
        return 16

    def placeholder(self, height: int, width: int, example=None) -> np.ndarray:
        """A batch of one blank target (shaped like `example`, a target of the set, where the kind has no fixed
        shape)."""
        return np.zeros((1, *self.shape(height, width)), self.dtype)

    def crop(self, target, top: int, left: int, size: int, height: int, width: int):
        """The target of the size x size window at (top, left) of a height x width image."""
        return target

    def augment(self, augment, image: np.ndarray, target) -> tuple[np.ndarray, object]:
        """The image through an albumentations pipeline, the target moved with it where it has a place."""
        return augment(image=image)["image"], target

    def bbox_params(self):
        """albumentations' bounding-box parameters for a pipeline that must move this target (None: none)."""
        return None

    def from_masks(self, masks: np.ndarray, num_classes: int) -> np.ndarray:
        """The targets of a generated set, made from its masks (N, H, W) of class indices (0: background)."""
        raise NotImplementedError(f"{self.kind} targets are not made from masks")


class Mask(Target):
    kind = "mask"
    spatial = True
    in_index = False
    served_meaning = (
        "(batch, height, width, classes) softmax probabilities per pixel; argmax over the last axis is the "
        "index into class_names"
    )

    def shape(self, height, width):
        return (height, width)

    def nbytes(self, height, width):
        return height * width

    def crop(self, target, top, left, size, height, width):
        return target[top : top + size, left : left + size]

    def augment(self, augment, image, target):
        out = augment(image=image, mask=target)
        return out["image"], out["mask"]


class Label(Target):
    kind = "label"
    image_class = True

    def from_masks(self, masks, num_classes):
        """The class of the one object in each mask."""
        from pipeline.data.classification import shapes_labels

        return shapes_labels(masks)[0]


class Boxes(Target):
    kind = "boxes"
    served_output = "boxes"
    served_meaning = "(batch, 4) box x_min, y_min, x_max, y_max as fractions of the image's width and height"
    dtype = np.float32

    def shape(self, height, width):
        return (4,)

    def crop(self, target, top, left, size, height, width):
        """The box re-expressed in the window and clipped to it."""
        box = np.asarray(target, np.float32) * [width, height, width, height] - [left, top, left, top]
        return (np.clip(box, 0, size) / size).astype(np.float32)

    def augment(self, augment, image, target):
        """The one box moved by the same geometric transforms; a sample whose box the transforms pushed out of
        the frame is kept as it was."""
        out = augment(image=image, bboxes=np.asarray(target, np.float32)[None])
        if len(out["bboxes"]) == 1:
            return out["image"], np.asarray(out["bboxes"][0][:4], np.float32)
        return image, np.asarray(target, np.float32)

    def bbox_params(self):
        import albumentations as A

        return A.BboxParams(format="albumentations", label_fields=[], clip=True)

    def from_masks(self, masks, num_classes):
        """The box of the one object in each mask, (x_min, y_min, x_max, y_max) as fractions of the image: the
        last pixel's far edge is 1."""
        from pipeline.data.classification import shapes_labels

        height, width = masks.shape[1:3]
        return ((shapes_labels(masks)[1] + [0, 0, 1, 1]) / [width, height, width, height]).astype(np.float32)


class Values(Target):
    """A vector of numbers per image (regression: the fraction of the image each class covers, a count): they
    must not change under the augmentation's transforms (flips and quarter turns keep a coverage; a crop
    does not, so data.fit=crop is refused)."""

    kind = "values"
    served_output = "values"
    served_meaning = "(batch, outputs) one value in 0..1 per name in class_names (e.g. the fraction each covers)"
    croppable = False
    dtype = np.float32

    def placeholder(self, height, width, example=None):
        return np.zeros((1, *np.shape(example)), self.dtype)

    def crop(self, target, top, left, size, height, width):
        from pipeline.errors import ConfigError

        raise ConfigError("data.fit=crop changes what a regression target measures; valid: data.fit=stretch")

    def from_masks(self, masks, num_classes):
        """The fraction of each image that each class but the background (0) covers."""
        return np.stack([(masks == k).mean(axis=(1, 2)) for k in range(1, num_classes)], axis=1).astype(np.float32)


TARGETS = {target.kind: target for target in (Mask(), Label(), Boxes(), Values())}


def target_of(kind: str) -> Target:
    return TARGETS[kind]
