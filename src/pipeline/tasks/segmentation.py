"""Semantic segmentation: a class per pixel. Targets are masks (N, H, W) of class indices."""

import math
from pathlib import Path

import keras
import numpy as np
from PIL import Image
from tqdm import tqdm

from pipeline.config import checked_call
from pipeline.config.options import PREDICT_MODES, TILE_BLENDS
from pipeline.data.folders import outputs_at_size
from pipeline.errors import ConfigError
from pipeline.evaluation.metrics import confusion_matrix, segmentation_scores
from pipeline.plots import viz
from pipeline.tasks.base import Report, Written
from pipeline.tasks.scoring import Stacked, TopK
from pipeline.tasks.tta import averaged
from pipeline.training.losses import SegmentationLoss, refuse_smoothing


def predict_probabilities(model: keras.Model, images: np.ndarray, batch_size: int = 32, tta=False) -> np.ndarray:
    """Class probabilities (N, H, W, C); with tta (pipeline.tasks.tta), the mean over the views it names, each
    turned back into the image's frame."""
    return averaged(lambda x: model.predict(x, batch_size=batch_size, verbose=0), images.astype(np.float32), tta, True)


def per_image_matrices(masks: np.ndarray, predicted: np.ndarray, num_classes: int, ignore_label=None) -> np.ndarray:
    """(N, C, C) int64: each image's confusion matrix (their sum is the split's)."""
    return np.stack([confusion_matrix(m, p, num_classes, ignore_label) for m, p in zip(masks, predicted)])


class SegmentationTally:
    """Per image: its confusion matrix (the split's scores come from their sum, never a mean of image means; a
    bootstrap resamples them) and its own mean IoU, which picks the best and worst pictures kept."""

    def __init__(self, classes: list[str], num_examples: int = 4, ignore_label: int | None = None):
        self.classes, self.num_examples, self.ignore_label = classes, num_examples, ignore_label
        self.matrices = Stacked()
        self.first, self.best, self.worst = TopK(num_examples), TopK(num_examples), TopK(num_examples)

    def add(self, start, images, targets, outputs) -> None:
        predicted = np.argmax(outputs, axis=-1).astype(np.uint8)
        matrices = per_image_matrices(targets, predicted, len(self.classes), self.ignore_label)
        self.matrices.add(matrices)
        if not self.num_examples:
            return
        names = [str(c) for c in range(len(self.classes))]
        for k, (image, mask, labels, cm) in enumerate(zip(images, targets, predicted, matrices)):
            score = segmentation_scores(cm, names)["mean_iou"]
            self.first.offer(-(start + k), start + k, image, mask, labels)
            self.best.offer(score, start + k, image, mask, labels)
            self.worst.offer(-score, start + k, image, mask, labels)

    def headline_of(self, indices: np.ndarray) -> float:
        return segmentation_scores(self.matrices.all()[indices].sum(axis=0), self.classes)["mean_iou"]

    def report(self) -> Report:
        cm = self.matrices.all().sum(axis=0)
        scores = segmentation_scores(cm, self.classes)
        seen = [name for name, count in zip(self.classes, cm.sum(axis=0)) if count]  # columns: predicted
        if not self.num_examples:  # scores only
            return Report(scores, "mean_iou", predicted=seen)
        figures = {
            "plots/test_predictions.png": viz.prediction_grid(*self.first.columns(), self.classes),
            "plots/confusion_matrix.png": viz.confusion_matrix_figure(cm, self.classes),
            "plots/worst_predictions.png": viz.prediction_grid(*self.worst.columns(), self.classes),
            "plots/best_predictions.png": viz.prediction_grid(*self.best.columns(), self.classes),
        }
        return Report(scores, "mean_iou", figures, predicted=seen)


def predict_resized(model: keras.Model, image: np.ndarray, tta=False) -> np.ndarray:
    """Probabilities (H, W, C) for an image of any size via the model's own input size (as the served model)."""
    shape = tuple(model.inputs[0].shape[1:3])
    return outputs_at_size(lambda batch: predict_probabilities(model, batch, tta=tta), image, shape)


def tile_weights(tile_h: int, tile_w: int, blend: str = "gaussian", sigma_scale: float = 0.125) -> np.ndarray:
    """How much each pixel of a tile counts where tiles overlap: a Gaussian centred on the tile (σ = 1/8 of
    its side, as MONAI's sliding-window inference), so a tile's border predictions, made with little
    context, weigh less than its centre's; or flat (every pixel 1)."""
    if blend not in TILE_BLENDS:
        raise ConfigError(f"tile_blend={blend!r} is unknown; valid: {', '.join(TILE_BLENDS)}")
    if blend == "flat":
        return np.ones((tile_h, tile_w, 1), np.float32)
    y = np.arange(tile_h) - (tile_h - 1) / 2
    x = np.arange(tile_w) - (tile_w - 1) / 2
    weights = np.exp(
        -(y[:, None] ** 2) / (2 * (sigma_scale * tile_h) ** 2) - x[None] ** 2 / (2 * (sigma_scale * tile_w) ** 2)
    )
    weights = weights / weights.max()
    return np.maximum(weights, 1e-3)[..., None].astype(np.float32)  # every pixel keeps a positive weight


def predict_tiled(
    model: keras.Model, image: np.ndarray, overlap: float = 0.5, tta=False, blend: str = "gaussian"
) -> np.ndarray:
    """Probabilities (H, W, C) from overlapping model-sized tiles over a mirror-padded image, predicted in one
    batch and blended with `tile_weights`."""
    tile_h, tile_w = model.inputs[0].shape[1:3]
    weights = tile_weights(tile_h, tile_w, blend)
    step_h, step_w = max(1, int(tile_h * (1 - overlap))), max(1, int(tile_w * (1 - overlap)))
    height, width = image.shape[:2]
    rows = max(1, math.ceil((height - tile_h) / step_h) + 1)
    cols = max(1, math.ceil((width - tile_w) / step_w) + 1)
    pad_h, pad_w = (rows - 1) * step_h + tile_h - height, (cols - 1) * step_w + tile_w - width
    mode = "reflect" if pad_h < height and pad_w < width else "symmetric"
    padded = np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)), mode=mode)
    tiles = np.stack(
        [
            padded[r * step_h : r * step_h + tile_h, c * step_w : c * step_w + tile_w]
            for r in range(rows)
            for c in range(cols)
        ]
    )
    probabilities = predict_probabilities(model, tiles, tta=tta)
    total = np.zeros((*padded.shape[:2], probabilities.shape[-1]), np.float32)
    counts = np.zeros(padded.shape[:2] + (1,), np.float32)
    for k, tile in enumerate(probabilities):
        r, c = divmod(k, cols)
        total[r * step_h : r * step_h + tile_h, c * step_w : c * step_w + tile_w] += tile * weights
        counts[r * step_h : r * step_h + tile_h, c * step_w : c * step_w + tile_w] += weights
    return (total / counts)[:height, :width]


def overlay(
    image: np.ndarray, labels: np.ndarray, num_classes: int, alpha: float = 0.5, background: int | None = 0
) -> np.ndarray:
    """The image (grey or RGB) with each class painted in its colour, but `background` (None: paint every
    class, for sets whose class 0 is a real class)."""
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    colours = (np.array([viz.class_colormap(num_classes)(i)[:3] for i in range(num_classes)]) * 255).astype(np.float32)
    painted_class = labels[..., None] != background if background is not None else np.ones_like(labels[..., None], bool)
    painted = np.where(painted_class, (1 - alpha) * image + alpha * colours[labels], image)
    return painted.astype(np.uint8)


def palette_mask(labels: np.ndarray, num_classes: int) -> Image.Image:
    """Class indices (H, W) as a palette PNG: the pixel values stay the indices (np.asarray gives them back,
    the Pascal VOC convention) and any viewer shows each class in its colour, not a black image of 0s and 1s."""
    mask = Image.fromarray(labels.astype(np.uint8), mode="P")
    colours = (np.array([viz.class_colormap(num_classes)(i)[:3] for i in range(num_classes)]) * 255).astype(np.uint8)
    mask.putpalette(colours.ravel().tolist())
    return mask


class Segmentation:
    name = "segmentation"
    target = "mask"
    monitor = "val_mean_iou"
    headline = "mean_iou"

    def loss_and_metrics(self, loss_options: dict, num_classes: int) -> tuple:
        loss_options = refuse_smoothing(loss_options, self.name)
        loss = checked_call(SegmentationLoss, loss_options, "loss", num_classes=num_classes)
        iou = keras.metrics.MeanIoU(num_classes, sparse_y_pred=False, ignore_class=loss.ignore_label, name="mean_iou")
        return loss, [iou]

    def check_targets(self, targets: np.ndarray, classes: list[str], split: str, data_name: str) -> None:
        """Masks are checked file by file as they are read (pipeline.data.folders)."""

    def tally(self, classes: list[str], num_examples: int = 4, ignore_label: int | None = None, **_):
        return SegmentationTally(classes, num_examples, ignore_label)

    def outputs(self, model, images: np.ndarray, tta=False) -> np.ndarray:
        return predict_probabilities(model, images, len(images), tta)

    def predict(
        self,
        model,
        images: list[np.ndarray],
        names: list[str],
        classes: list[str],
        out: Path,
        mode: str = "resize",
        tile_overlap: float = 0.5,
        tta=False,
        num_logged: int = 8,
        tile_blend: str = "gaussian",
        background: int | None = 0,
        **_,
    ) -> Written:
        """masks/<name>.png (class indices in a palette PNG: viewers show the class colours, readers get the
        indices) and overlays/<name>.png for every image, at its own size."""
        if mode not in PREDICT_MODES:
            raise ConfigError(f"mode={mode!r} is unknown; valid: {', '.join(PREDICT_MODES)}")
        (out / "masks").mkdir(parents=True, exist_ok=True)
        (out / "overlays").mkdir(parents=True, exist_ok=True)
        written = Written()
        for image, name in tqdm(list(zip(images, names)), desc="segmenting", unit="img"):
            if mode == "tile":
                probabilities = predict_tiled(model, image, tile_overlap, tta, tile_blend)
            else:
                probabilities = predict_resized(model, image, tta)
            labels = np.argmax(probabilities, axis=-1).astype(np.uint8)
            mask, painted = out / "masks" / f"{name}.png", out / "overlays" / f"{name}.png"
            palette_mask(labels, probabilities.shape[-1]).save(mask)
            Image.fromarray(overlay(image, labels, probabilities.shape[-1], background=background)).save(painted)
            written.files += [mask, painted]
            if len(written.logged) < num_logged:
                written.logged.append(painted)
        return written

    def explain(self, probabilities: np.ndarray, targets: np.ndarray | None, classes: list[str]) -> tuple:
        """Per class, over its true (else predicted) region; a class absent from an image is scored over the
        whole image ("why not this class anywhere")."""
        from pipeline.interpret import probes

        masks = probabilities.argmax(axis=-1) if targets is None else targets
        explained = [c for c, name in enumerate(classes) if name != "background"]
        names = [classes[c] for c in explained]
        count = len(probabilities)
        weights = [probes.target_weights(probabilities.shape, np.full(count, c), masks) for c in explained]
        rows = [", ".join(classes[c] for c in explained if (mask == c).any()) or "background" for mask in masks]
        return names, weights, rows
