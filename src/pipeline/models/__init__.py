"""Model builders: small functions of plain arguments that return a keras.Model, looked up by config name.

MODELS is the one table of which model does what: name -> (where its builder lives, the task its output
serves). Builders are imported when a model is built, so reading the table (the config schema does)
imports no Keras. May import config (checked calls), lecture (fixed kernels) and training (losses, to
register them for loading).
"""

import importlib

from pipeline.config import checked_call
from pipeline.errors import ConfigError

MODELS: dict[str, tuple[str, str]] = {
    "unet": ("pipeline.models.unet:unet", "segmentation"),
    "unet_paper": ("pipeline.models.unet:unet_paper", "segmentation"),
    "unet_backbone": ("pipeline.models.backbone_unet:unet_backbone", "segmentation"),
    "deeplabv3plus": ("pipeline.models.deeplab:deeplabv3plus", "segmentation"),
    "segnet": ("pipeline.models.segnet:segnet", "segmentation"),
    "lenet5": ("pipeline.models.classic:lenet5", "classification"),
    "alexnet": ("pipeline.models.classic:alexnet", "classification"),
    "convnet": ("pipeline.models.classic:convnet", "classification"),
    "resnet": ("pipeline.models.classic:resnet", "classification"),
    "googlenet": ("pipeline.models.classic:googlenet", "classification"),
    "neocognitron": ("pipeline.models.classic:neocognitron", "classification"),
    "mlp": ("pipeline.models.classic:mlp", "classification"),
    "localizer": ("pipeline.models.localization:localizer", "localization"),
    "regressor": ("pipeline.models.localization:regressor", "regression"),
}


def task_of_model(name: str) -> str:
    """The task a model's output serves (segmentation, classification, localization)."""
    return MODELS[name][1]


def builder(name: str):
    """The builder function of model `name`."""
    if name not in MODELS:
        raise ConfigError(f"model.name={name!r} is unknown; valid: {', '.join(sorted(MODELS))}")
    module, function = MODELS[name][0].split(":")
    return getattr(importlib.import_module(module), function)


def register_all() -> None:
    """Import every builder's module, which registers the custom layers, losses and metrics a saved
    model may name (MaxUnpooling2D, MirrorPadding2D, BoxIoU, SegmentationLoss, ...)."""
    import pipeline.training.losses  # noqa: F401

    for name in MODELS:
        builder(name)


def build_model(name: str, input_shape: tuple[int, int, int], num_classes: int, **options):
    """Build model `name` with its options from conf/model/<name>.yaml (checked against the builder)."""
    return checked_call(builder(name), options, "model", input_shape=tuple(input_shape), num_classes=num_classes)


def model_input(model):
    """What a model derived from `model` takes as its input: the input tensor itself when there is one (a list
    of one would make Keras warn at every call with an image batch that the structure does not match), the
    list when there are several."""
    return model.inputs[0] if len(model.inputs) == 1 else model.inputs
