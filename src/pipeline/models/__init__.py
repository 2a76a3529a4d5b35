"""Model builders: small functions of plain arguments that return a keras.Model, looked up by config name."""

import keras

from pipeline.config import checked_call
from pipeline.errors import ConfigError
from pipeline.models.backbone_unet import unet_backbone
from pipeline.models.classic import alexnet, convnet, googlenet, lenet5, mlp, neocognitron, resnet
from pipeline.models.localization import localizer
from pipeline.models.segnet import segnet
from pipeline.models.unet import unet, unet_paper

MODELS = {
    "unet": unet,
    "unet_paper": unet_paper,
    "unet_backbone": unet_backbone,
    "segnet": segnet,
    "lenet5": lenet5,
    "alexnet": alexnet,
    "convnet": convnet,
    "resnet": resnet,
    "googlenet": googlenet,
    "neocognitron": neocognitron,
    "mlp": mlp,
    "localizer": localizer,
}
TASK_OF_MODEL = {
    "unet": "segmentation",
    "unet_paper": "segmentation",
    "unet_backbone": "segmentation",
    "segnet": "segmentation",
    "localizer": "localization",
}
# every other model classifies


def build_model(name: str, input_shape: tuple[int, int, int], num_classes: int, **options) -> keras.Model:
    """Build model `name` with its options from conf/model/<name>.yaml (checked against the builder)."""
    if name not in MODELS:
        raise ConfigError(f"model.name={name!r} is unknown; valid: {', '.join(sorted(MODELS))}")
    return checked_call(MODELS[name], options, "model", input_shape=tuple(input_shape), num_classes=num_classes)
