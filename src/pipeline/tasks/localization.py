"""Classification + localization (the lecture's): the box of the one object in each image. Targets are
boxes (N, 4) = (x_min, y_min, x_max, y_max) as fractions of the image width and height, which is
albumentations' own box format, so geometric augmentation moves the boxes with their images."""

import csv
from pathlib import Path

import keras
import numpy as np
from PIL import Image, ImageDraw

from pipeline.errors import ConfigError
from pipeline.models.localization import BoxIoU, box_iou
from pipeline.plots import viz
from pipeline.tasks.base import Report, Written
from pipeline.tasks.scoring import Stacked, TopK
from pipeline.tasks.tta import check


def predict_boxes(model: keras.Model, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    return np.asarray(model.predict(images.astype(np.float32), batch_size=batch_size, verbose=0), np.float32)


def draw_box(image: np.ndarray, box: np.ndarray, colour=(255, 0, 0)) -> Image.Image:
    picture = Image.fromarray(image.squeeze().astype(np.uint8)).convert("RGB")
    width, height = picture.size
    x0, y0, x1, y1 = (box * np.array([width, height, width, height])).tolist()
    ImageDraw.Draw(picture).rectangle([x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)], outline=colour, width=2)
    return picture


class LocalizationTally:
    """Per image: true and predicted box and their IoU; kept pictures: the first 16 and the 2·num_examples
    lowest IoUs."""

    def __init__(self, num_examples: int = 6):
        self.num_examples, self.rows = num_examples, Stacked()
        self.first, self.worst = TopK(16 if num_examples else 0), TopK(2 * num_examples)

    def add(self, start, images, targets, outputs) -> None:
        ious = keras.ops.convert_to_numpy(box_iou(targets, outputs))
        self.rows.add(np.concatenate([targets, outputs, ious[:, None]], axis=1))
        for k, (image, box, guess, iou) in enumerate(zip(images, targets, outputs, ious)):
            self.first.offer(-(start + k), start + k, image, box, guess)
            self.worst.offer(-iou, start + k, image, box, guess)

    def headline_of(self, indices: np.ndarray) -> float:
        return float(self.rows.all()[indices, 8].mean())

    def report(self) -> Report:
        rows = self.rows.all()
        ious = rows[:, 8]
        scores = {"box_iou": float(ious.mean()), "box_iou_above_0.5": float((ious > 0.5).mean())}
        if not self.num_examples:  # scores only
            return Report(scores, "box_iou")
        figures = {
            "plots/test_predictions.png": viz.box_grid(*self.first.columns()),
            "plots/worst_boxes.png": viz.box_grid(*self.worst.columns()),
        }
        lines = [f"{i},{','.join(f'{v:.5f}' for v in row[:8])},{row[8]:.5f}\n" for i, row in enumerate(rows)]
        header = "index,true_x_min,true_y_min,true_x_max,true_y_max,x_min,y_min,x_max,y_max,iou\n"
        return Report(scores, "box_iou", figures, table=header + "".join(lines))


class Localization:
    name = "localization"
    target = "boxes"
    monitor = "val_box_iou"
    moves_with_views = "a box moves when its image is mirrored or turned"  # pipeline.tasks.tta refuses tta here
    headline = "box_iou"

    def loss_and_metrics(self, loss_options: dict, num_classes: int) -> tuple:
        from pipeline.training.losses import refuse_smoothing

        refuse_smoothing(loss_options, self.name)
        return keras.losses.Huber(delta=0.1), [BoxIoU()]

    def check_targets(self, targets: np.ndarray, classes: list[str], split: str, data_name: str) -> None:
        if len(targets) and (targets.ndim != 2 or targets.shape[1] != 4):
            raise ConfigError(
                f"the {split} split of data={data_name} has targets of shape {targets.shape}; "
                "valid: boxes (N, 4) = x_min, y_min, x_max, y_max as fractions of the image size"
            )

    def tally(self, classes: list[str], num_examples: int = 6, **_):
        return LocalizationTally(num_examples)

    def outputs(self, model, images: np.ndarray, tta=False) -> np.ndarray:
        check(tta, self)
        return predict_boxes(model, images, len(images))

    def predict(
        self, model, images, names, classes, out: Path, batch_size=32, num_logged=8, files=None, tta=False, **_
    ):
        """boxes.csv (file as found, x_min, y_min, x_max, y_max in pixels of the original image) and each image
        with its box."""
        check(tta, self)
        from pipeline.data.folders import resize_image

        (out / "boxes").mkdir(parents=True, exist_ok=True)
        shape = tuple(model.inputs[0].shape[1:3])
        boxes = predict_boxes(model, np.stack([resize_image(image, shape) for image in images]), batch_size)
        written = Written()
        table = out / "boxes.csv"
        with table.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["file", "x_min", "y_min", "x_max", "y_max"])
            for image, name, file, box in zip(images, names, files or names, boxes):
                height, width = image.shape[:2]
                writer.writerow([file, *(f"{v:.1f}" for v in box * np.array([width, height, width, height]))])
                drawn = out / "boxes" / f"{name}.png"
                draw_box(image, box).save(drawn)
                written.files.append(drawn)
                if len(written.logged) < num_logged:
                    written.logged.append(drawn)
        written.files.append(table)
        written.logged.append(table)
        return written

    def explain(self, probabilities, targets, classes) -> tuple:
        raise ConfigError("data.task='localization' cannot be visualized; valid: classification, segmentation")
