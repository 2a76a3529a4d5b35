"""SegNet (Badrinarayanan, Kendall & Cipolla 2017): an encoder-decoder whose decoder upsamples by
max-unpooling with the encoder's switch variables — no skip connections, no learned upsampling."""

import keras
from keras import layers

from pipeline.models.layers import MaxPoolingWithSwitches2D, MaxUnpooling2D
from pipeline.models.unet import check_common, check_poolable


def _convs(x, filters: list[int], batch_norm: bool, name: str):
    for i, f in enumerate(filters, start=1):
        x = layers.Conv2D(f, 3, padding="same", use_bias=not batch_norm, name=f"{name}_conv{i}")(x)
        if batch_norm:
            x = layers.BatchNormalization(name=f"{name}_bn{i}")(x)
        x = layers.Activation("relu", name=f"{name}_relu{i}")(x)
    return x


def segnet(
    input_shape: tuple[int, int, int],
    num_classes: int,
    depth: int = 4,
    base_filters: int = 64,
    convs_per_block: int = 2,
    batch_norm: bool = True,
    dropout: float = 0.0,
) -> keras.Model:
    """Encoder: [conv-bn-relu x n, 2x2 max pool (switches kept)] x depth; decoder mirrors it with unpooling."""
    check_common(depth, base_filters, num_classes, dropout)
    check_poolable(*input_shape[:2], depth)
    inputs = keras.Input(shape=input_shape, name="images")
    x = layers.Rescaling(1.0 / 255, name="rescale")(inputs)
    switches = []
    for level in range(depth):
        x = _convs(x, [base_filters * 2**level] * convs_per_block, batch_norm, f"encoder{level + 1}")
        x, switch = MaxPoolingWithSwitches2D(2, name=f"encoder{level + 1}_pool")(x)
        switches.append(switch)
    if dropout > 0:
        x = layers.Dropout(dropout, name="bottleneck_dropout")(x)
    for level in reversed(range(depth)):
        x = MaxUnpooling2D(2, name=f"decoder{level + 1}_unpool")([x, switches[level]])
        filters = base_filters * 2**level
        out = base_filters * 2 ** max(level - 1, 0)  # hand the next (shallower) unpooling its channel count
        x = _convs(x, [filters] * (convs_per_block - 1) + [out], batch_norm, f"decoder{level + 1}")
    outputs = layers.Conv2D(num_classes, 1, activation="softmax", dtype="float32", name="classifier")(x)
    return keras.Model(inputs, outputs, name="segnet")
