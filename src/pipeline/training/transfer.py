"""The transfer stage's model factory (pipeline.commands.transfer): reuse a trained network on a small set.

It trains through the same Job as the train stage (pipeline.training.job), so it streams, resumes, prunes,
distributes and logs alike; what differs is the model (a source's backbone under a new head) and its
phases. Strategies, all with the same epoch budget:
  scratch             the source's architecture, freshly initialised, everything trained
  feature_extraction  the backbone frozen (inference mode), only a new head trained
  fine_tune           head warm-up, then the top `fine_tune_blocks` blocks too, at lr x lr_factor
  full                head warm-up, then the whole backbone, at lr x lr_factor
"""

import logging

import keras

from pipeline import tracking
from pipeline.config.options import TRANSFER_STRATEGIES as STRATEGIES
from pipeline.config.spec import Spec
from pipeline.errors import ConfigError
from pipeline.models.backbone_unet import backbone_unet, pyramid_unet
from pipeline.models.backbones import (
    APPLICATIONS,
    application,
    classifier_backbone,
    feature_map_backbone,
    hub_pyramid,
    is_hub_preset,
    pyramid_levels,
    transfer_classifier,
)
from pipeline.tasks import Task, get_task
from pipeline.tasks.targets import target_of
from pipeline.training.recipe import Built, Phase

log = logging.getLogger(__name__)


def phases(
    strategy: str, epochs: int, warmup_epochs: int, lr: float, lr_factor: float, fine_tune_blocks: int
) -> list[Phase]:
    """The training phases of a strategy: epochs, learning rate, top blocks trainable (None: all)."""
    if strategy not in STRATEGIES:
        raise ConfigError(f"transfer.strategy={strategy!r} is unknown; valid: {', '.join(STRATEGIES)}")
    if strategy == "scratch":
        return [Phase(epochs, lr, None)]
    if strategy == "feature_extraction":
        return [Phase(epochs, lr, 0)]
    if not 0 < warmup_epochs < epochs:  # the schema's check_transfer_warmup answers this for a command
        raise ValueError(f"warmup_epochs={warmup_epochs} leaves no epoch of {epochs} to {strategy}")
    top = fine_tune_blocks if strategy == "fine_tune" else None
    return [Phase(warmup_epochs, lr, 0), Phase(epochs - warmup_epochs, lr * lr_factor, top)]


def load_backbone(
    source: str, task: Task, input_shape: tuple, uri: str, fresh: bool, weights: str | None, alpha: float | None
) -> tuple[keras.Model, str | None]:
    """The source's backbone (its run id, if a run): a keras.applications name or anything
    tracking.load_model takes. fresh=True: the same architecture, newly initialised (scratch)."""
    if source in APPLICATIONS:
        return application(source, input_shape, None if fresh else weights, alpha), None
    if is_hub_preset(source):  # a KerasHub image backbone: its feature pyramid, weights from the preset
        pyramid = hub_pyramid(source, input_shape)
        if not target_of(task.target).spatial:  # a classifier's head goes on the deepest level
            pyramid = keras.Model(pyramid.inputs, pyramid.outputs[-1], name=pyramid.name)
        return (keras.models.clone_model(pyramid) if fresh else pyramid), None
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
        if len(backbone.outputs) > 1:  # a feature pyramid (a KerasHub backbone): its levels are the skips
            name = f"{backbone.name.removesuffix('_pyramid')}_unet"
            return pyramid_unet(backbone, pyramid_levels(backbone), num_classes, base_filters, training, name)
        return backbone_unet(backbone, num_classes, base_filters, encoder_training=training)
    if not target_of(task.target).image_class:
        raise ConfigError(f"data.task={task.name!r}: the transfer stage handles classification and segmentation")
    return transfer_classifier(backbone, num_classes, training, head_dropout)


def factory(cfg: Spec, input_shape: tuple, num_classes: int) -> Built:
    """The transfer stage's model (pipeline.training.recipe.Factory): cfg.transfer.source's backbone under a new
    head, trained by cfg.transfer.strategy's phases, its last epoch kept."""
    t, task = cfg.transfer, get_task(cfg.data.task)
    fresh = t.strategy == "scratch"
    backbone, source_run = load_backbone(str(t.source), task, input_shape, cfg.tracking.uri, fresh, t.weights, t.alpha)
    model = build_transfer_model(backbone, task, num_classes, t.strategy, t.head_dropout, t.base_filters)
    schedule = phases(t.strategy, cfg.trainer.epochs, t.warmup_epochs, cfg.optimizer.lr, t.lr_factor,
                      t.fine_tune_blocks)  # fmt: skip
    return Built(model, schedule, backbone, keep="last", tags={"source_run": source_run} if source_run else {})
