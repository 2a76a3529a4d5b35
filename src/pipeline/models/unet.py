"""U-Net (Ronneberger et al. 2015) in its modern form: 'same' convs, batch norm, dropout, transposed-conv decoder."""

import keras
from keras import layers

from pipeline.errors import ConfigError
from pipeline.models.layers import FixedKernelConv2D


def conv_block(x, filters: int, batch_norm: bool, dropout: float, name: str):
    """(CONV-[BN]-RELU) x 2: the unit every U-Net level is made of."""
    for i in (1, 2):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=not batch_norm, name=f"{name}_conv{i}")(x)
        if batch_norm:
            x = layers.BatchNormalization(name=f"{name}_bn{i}")(x)
        x = layers.Activation("relu", name=f"{name}_relu{i}")(x)
    if dropout > 0:
        x = layers.Dropout(dropout, name=f"{name}_dropout")(x)
    return x


def unet(
    input_shape: tuple[int, int, int],
    num_classes: int,
    depth: int = 4,
    base_filters: int = 64,
    batch_norm: bool = True,
    dropout: float = 0.0,
    stem: str | None = None,
    stem_trainable: bool = False,
) -> keras.Model:
    """Encoder (conv blocks + 2x2 max pooling) -> bottleneck -> decoder (2x2 Conv2DTranspose + skip concat).

    Filters double at each of the `depth` pooling steps; a 1x1 conv and softmax give per-pixel class
    probabilities. The input is raw pixel values in [0, 255]; rescaling happens inside the model so a
    logged model can be served on plain images. `stem` puts a classic filter bank ('sobel', 'gabor')
    in front of the encoder, fixed or (stem_trainable) as the initialisation of a learned first layer.
    """
    height, width, _ = input_shape
    if depth < 1:
        raise ConfigError(f"model.depth={depth} is invalid: must be an integer >= 1")
    if base_filters < 1:
        raise ConfigError(f"model.base_filters={base_filters} is invalid: must be an integer >= 1")
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"model.dropout={dropout} is invalid: must be in [0, 1)")
    if num_classes < 2:
        raise ConfigError(f"num_classes={num_classes} is invalid: segmentation needs >= 2 classes")
    for level in range(1, depth + 1):
        if height % 2**level or width % 2**level:
            raise ConfigError(
                f"input size {height}x{width} cannot pass layer encoder{level}_pool: every 2x2 pooling "
                f"needs an even size, so model.depth={depth} needs height and width divisible by {2**depth}"
            )

    inputs = keras.Input(shape=input_shape, name="image")
    x = layers.Rescaling(1.0 / 255, name="rescale")(inputs)
    if stem is not None:
        x = FixedKernelConv2D(stem, trainable=stem_trainable, name="stem")(x)
    skips = []
    for level in range(depth):
        x = conv_block(x, base_filters * 2**level, batch_norm, 0.0, name=f"encoder{level + 1}")
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"encoder{level + 1}_pool")(x)
    x = conv_block(x, base_filters * 2**depth, batch_norm, dropout, name="bottleneck")
    for level in reversed(range(depth)):
        filters = base_filters * 2**level
        x = layers.Conv2DTranspose(filters, 2, strides=2, name=f"decoder{level + 1}_upconv")(x)
        x = layers.Concatenate(name=f"decoder{level + 1}_skip")([x, skips[level]])
        x = conv_block(x, filters, batch_norm, dropout if level == depth - 1 else 0.0, name=f"decoder{level + 1}")
    outputs = layers.Conv2D(num_classes, 1, activation="softmax", dtype="float32", name="classifier")(x)
    return keras.Model(inputs, outputs, name="unet")
