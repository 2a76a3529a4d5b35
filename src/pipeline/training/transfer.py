"""The library behind the transfer stage (pipeline.commands.transfer): reuse a trained network on a small set.

Strategies, all with the same epoch budget:
  scratch             the source's architecture, freshly initialised, everything trained
  feature_extraction  the backbone frozen (inference mode), only a new head trained
  fine_tune           head warm-up, then the top `fine_tune_blocks` blocks too, at lr x lr_factor
  full                head warm-up, then the whole backbone, at lr x lr_factor
"""

import logging

import keras
import numpy as np

from pipeline import tracking
from pipeline.config.options import TRANSFER_STRATEGIES as STRATEGIES
from pipeline.console import progress_verbosity
from pipeline.errors import ConfigError
from pipeline.models.backbone_unet import backbone_unet
from pipeline.models.backbones import (
    APPLICATIONS,
    application,
    classifier_backbone,
    feature_map_backbone,
    set_trainable,
    transfer_classifier,
)
from pipeline.tasks import Task
from pipeline.tasks.targets import target_of
from pipeline.training.runtime import build_optimizer

log = logging.getLogger(__name__)


def phases(
    strategy: str, epochs: int, warmup_epochs: int, lr: float, lr_factor: float, fine_tune_blocks: int
) -> list[tuple[int, float, int | None]]:
    """(epochs, learning rate, top blocks trainable; None: all) of each training phase."""
    if strategy not in STRATEGIES:
        raise ConfigError(f"transfer.strategy={strategy!r} is unknown; valid: {', '.join(STRATEGIES)}")
    if strategy == "scratch":
        return [(epochs, lr, None)]
    if strategy == "feature_extraction":
        return [(epochs, lr, 0)]
    if not 0 < warmup_epochs < epochs:
        raise ConfigError(
            f"transfer.warmup_epochs={warmup_epochs} is invalid for {strategy}: must be in 1..trainer.epochs-1 "
            f"(trainer.epochs={epochs})"
        )
    top = fine_tune_blocks if strategy == "fine_tune" else None
    return [(warmup_epochs, lr, 0), (epochs - warmup_epochs, lr * lr_factor, top)]


def load_backbone(
    source: str, task: Task, input_shape: tuple, uri: str, fresh: bool, weights: str | None, alpha: float | None
) -> tuple[keras.Model, str | None]:
    """The source's backbone (its run id, if a run): a keras.applications name or anything
    tracking.load_model takes. fresh=True: the same architecture, newly initialised (scratch)."""
    if source in APPLICATIONS:
        return application(source, input_shape, None if fresh else weights, alpha), None
    if source.startswith("latest:"):  # the newest finished run of an experiment, e.g. latest:transfer_source
        source = tracking.latest_run_id(uri, source.removeprefix("latest:"))
    model, run_id = tracking.load_model(source, uri)
    backbone = feature_map_backbone(model) if target_of(task.target).spatial else classifier_backbone(model)
    expected = tuple(backbone.inputs[0].shape[1:])
    if tuple(input_shape) != expected:
        raise ConfigError(
            f"transfer.source={source}: its model takes {expected} images but the data gives {tuple(input_shape)}; "
            "set data.image_size (and data.channels) to match"
        )
    return (keras.models.clone_model(backbone) if fresh else backbone), run_id


def build_transfer_model(
    backbone: keras.Model, task: Task, num_classes: int, strategy: str, head_dropout: float, base_filters: int
) -> keras.Model:
    """A new head on the backbone: a softmax classifier, or a U-Net decoder for segmentation."""
    training = None if strategy == "scratch" else False  # a reused backbone keeps its batch norm statistics
    if target_of(task.target).spatial:
        return backbone_unet(backbone, num_classes, base_filters, encoder_training=training)
    if not target_of(task.target).image_class:
        raise ConfigError(f"data.task={task.name!r}: the transfer stage handles classification and segmentation")
    return transfer_classifier(backbone, num_classes, training, head_dropout)


def fit_phases(
    model: keras.Model,
    backbone: keras.Model,
    schedule: list[tuple[int, float, int | None]],
    compile_model,
    train_batches,
    val_batches,
    optimizer_cfg: dict,
    verbose,
) -> dict[str, list[float]]:
    """Train phase by phase (recompiling after each change of what is trainable); one joined history."""
    history, start = {}, 0
    for epochs, lr, top_blocks in schedule:
        unfrozen = set_trainable(backbone, top_blocks)
        trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
        log.info(
            "epochs %d-%d at lr %.2g: %d trainable weights, backbone blocks %s",
            start + 1,
            start + epochs,
            lr,
            trainable,
            unfrozen,
        )
        tracking.log_metrics({"trainable_params": trainable, "unfrozen_blocks": len(unfrozen)}, step=start)
        options = {**optimizer_cfg, "lr": lr}
        compile_model(build_optimizer(steps_per_epoch=len(train_batches), epochs=epochs, **options))
        phase = model.fit(
            train_batches,
            validation_data=val_batches,
            initial_epoch=start,
            epochs=start + epochs,
            verbose=progress_verbosity(verbose),
            callbacks=[tracking.MetricsCallback()],
        ).history
        for key, values in phase.items():
            history.setdefault(key, []).extend(values)
        start += epochs
    return history
