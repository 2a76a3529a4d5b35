"""Heads that regress on a classifier's features (the lecture's "classification or regression based on
extracted features"): the box of classification + localization, and any vector of values."""

import keras
from keras import layers, ops


def localizer(
    input_shape: tuple[int, int, int], num_classes: int, backbone: str = "convnet", backbone_options: dict | None = None
) -> keras.Model:
    """The backbone classifier's features (the input of its softmax) -> Dense(4, sigmoid): the object's box
    as (x_min, y_min, x_max, y_max), each a fraction of the image width or height."""
    from pipeline.models import build_model

    classifier = build_model(backbone, input_shape, max(num_classes, 2), **(backbone_options or {}))
    features = classifier.layers[-1].input  # what the classifier's softmax sees
    box = layers.Dense(4, activation="sigmoid", dtype="float32", name="box")(features)
    return keras.Model(classifier.inputs, box, name=f"{backbone}_localizer")


def regressor(
    input_shape: tuple[int, int, int],
    num_classes: int,
    backbone: str = "convnet",
    backbone_options: dict | None = None,
    activation: str = "sigmoid",
) -> keras.Model:
    """The backbone classifier's features -> Dense(num_classes): one value per output name (data.classes),
    e.g. the fraction of the image each class covers (sigmoid: in 0..1; `activation=linear` for counts)."""
    from pipeline.models import build_model

    classifier = build_model(backbone, input_shape, max(num_classes, 2), **(backbone_options or {}))
    features = classifier.layers[-1].input
    values = layers.Dense(num_classes, activation=activation, dtype="float32", name="values")(features)
    return keras.Model(classifier.inputs, values, name=f"{backbone}_regressor")


@keras.saving.register_keras_serializable(package="pipeline")
class BoxIoU(keras.metrics.Mean):
    """Mean intersection over union of predicted and true boxes (x_min, y_min, x_max, y_max)."""

    def __init__(self, name: str = "box_iou", **kwargs):
        super().__init__(name=name, **kwargs)

    def update_state(self, y_true, y_pred, sample_weight=None):
        return super().update_state(box_iou(y_true, y_pred), sample_weight)


def box_iou(a, b):
    """IoU of boxes (..., 4) in keras.ops; a box with max < min has zero area."""
    a, b = ops.cast(a, "float32"), ops.cast(b, "float32")
    width = ops.maximum(ops.minimum(a[..., 2], b[..., 2]) - ops.maximum(a[..., 0], b[..., 0]), 0.0)
    height = ops.maximum(ops.minimum(a[..., 3], b[..., 3]) - ops.maximum(a[..., 1], b[..., 1]), 0.0)
    inter = width * height

    def area(box):
        return ops.maximum(box[..., 2] - box[..., 0], 0.0) * ops.maximum(box[..., 3] - box[..., 1], 0.0)

    return inter / ops.maximum(area(a) + area(b) - inter, 1e-9)
