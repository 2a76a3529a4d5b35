"""Evaluate stage: score a trained segmentation model on a split and log it as a run linked to its source.

    python -m pipeline.evaluate source=<run id>            # the run's logged model, on the run's own data
    python -m pipeline.evaluate source=outputs/.../checkpoints/best.keras split=val tta=true
The new run is nested under the source run in the MLflow UI; it logs test_mean_iou, test_dice,
test_pixel_accuracy, per-class IoU/Dice, a confusion matrix and the best and worst predictions.
"""

import logging

import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf

from pipeline import tracking, viz
from pipeline.config import conf_dir, stage
from pipeline.errors import ConfigError
from pipeline.prepare import load_data, prepare_data
from pipeline.segmentation import evaluate, per_image_mean_iou

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path=conf_dir(), config_name="evaluate")
@stage
def main(cfg: DictConfig) -> float:
    if cfg.split not in ("train", "val", "test"):
        raise ConfigError(f"split={cfg.split!r} is invalid; valid: train, val, test")
    model, source_run = tracking.load_model(str(cfg.source), cfg.tracking.uri)
    data, loss = cfg.data, cfg.loss
    if cfg.use_source_data and source_run and (source := tracking.load_run_config(source_run)):
        data, loss = (
            OmegaConf.create(source["data"]),
            OmegaConf.create(source["loss"]),
        )  # evaluate what it was trained on
    classes = list(data.classes)
    images, masks = load_data(data, prepare_data(data, progress=False), cfg.split)
    expected = tuple(model.inputs[0].shape[1:])
    if images.shape[1:] != expected:
        raise ConfigError(f"data.image_size gives {images.shape[1:]} images but the model expects {expected}")
    scores, cm, predicted = evaluate(model, images, masks, classes, cfg.batch_size, cfg.tta, loss.ignore_label)

    order = np.argsort(per_image_mean_iou(masks, predicted, len(classes)))
    worst, best = order[: cfg.num_examples], order[::-1][: cfg.num_examples]
    prefix = "test" if cfg.split == "test" else cfg.split
    tags = {"stage": "evaluate", "data": data.name, "source": str(cfg.source), "tta": str(cfg.tta)}
    with tracking.run(
        cfg.tracking.uri, cfg.tracking.experiment, cfg.tracking.run_name, cfg.tracking.artifact_root, tags, source_run
    ):
        tracking.log_params(
            {
                "source": cfg.source,
                "split": cfg.split,
                "tta": cfg.tta,
                "data": OmegaConf.to_container(data, resolve=True),
            }
        )
        tracking.log_metrics({f"{prefix}_{name}": value for name, value in scores.items()})
        tracking.log_figure(viz.confusion_matrix_figure(cm, classes), "plots/confusion_matrix.png")
        for name, picked in (("worst", worst), ("best", best)):
            figure = viz.prediction_grid(images[picked], masks[picked], predicted[picked], classes)
            tracking.log_figure(figure, f"plots/{name}_predictions.png")
    log.info(
        "%s: mean IoU %.4f, pixel accuracy %.4f, dice %.4f",
        cfg.split,
        scores["mean_iou"],
        scores["pixel_accuracy"],
        scores["dice"],
    )
    return scores["mean_iou"]


if __name__ == "__main__":
    main()
