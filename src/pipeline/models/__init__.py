"""Model builders: small functions of plain arguments that return a keras.Model, looked up by config name."""

from collections.abc import Callable

import keras

from pipeline.config import checked_call
from pipeline.errors import ConfigError
from pipeline.models.backbone_unet import unet_backbone
from pipeline.models.classic import alexnet, convnet, googlenet, lenet5, mlp, neocognitron, resnet
from pipeline.models.localization import localizer
from pipeline.models.segnet import segnet
from pipeline.models.unet import unet, unet_paper

# name -> (builder, the task its output serves): the one table of which model does what
MODELS: dict[str, tuple[Callable[..., keras.Model], str]] = {
    "unet": (unet, "segmentation"),
    "unet_paper": (unet_paper, "segmentation"),
    "unet_backbone": (unet_backbone, "segmentation"),
    "segnet": (segnet, "segmentation"),
    "lenet5": (lenet5, "classification"),
    "alexnet": (alexnet, "classification"),
    "convnet": (convnet, "classification"),
    "resnet": (resnet, "classification"),
    "googlenet": (googlenet, "classification"),
    "neocognitron": (neocognitron, "classification"),
    "mlp": (mlp, "classification"),
    "localizer": (localizer, "localization"),
}


def task_of_model(name: str) -> str:
    """The task a model's output serves (segmentation, classification, localization)."""
    return MODELS[name][1]


def build_model(name: str, input_shape: tuple[int, int, int], num_classes: int, **options) -> keras.Model:
    """Build model `name` with its options from conf/model/<name>.yaml (checked against the builder)."""
    if name not in MODELS:
        raise ConfigError(f"model.name={name!r} is unknown; valid: {', '.join(sorted(MODELS))}")
    return checked_call(MODELS[name][0], options, "model", input_shape=tuple(input_shape), num_classes=num_classes)
