"""U-Net (Ronneberger et al. 2015) in two forms.

`unet`: the modern form — 'same' convs, batch norm, dropout, and a decoder that upsamples by
    'transpose' (2x2 Conv2DTranspose), 'bilinear' (bilinear upsampling + 3x3 conv) or 'unpool'
    (max-unpooling with the encoder's switch variables).
`unet_paper`: the paper's form — unpadded 3x3 convs, 2x2 max pooling, 2x2 up-convolutions, skip
    connections cropped to the decoder's size, 64 base filters doubling over 4 levels, a 1x1 output
    conv: a 572x572 input gives a 388x388 output. With overlap_tile=True the input is mirror-padded
    (the paper's overlap-tile strategy) and the output cropped so that it matches the input size.
"""

import keras
from keras import layers

from pipeline.errors import ConfigError
from pipeline.models.layers import FixedKernelConv2D, MaxPoolingWithSwitches2D, MaxUnpooling2D, MirrorPadding2D

UPSAMPLING = ("transpose", "bilinear", "unpool")
HE = "he_normal"  # the paper draws weights from N(0, sqrt(2/N)): He et al.'s initialisation


def conv_block(
    x, filters: int, batch_norm: bool, dropout: float, name: str, padding: str = "same", init: str = "glorot_uniform"
):
    """(CONV-[BN]-RELU) x 2: the unit every U-Net level is made of."""
    for i in (1, 2):
        x = layers.Conv2D(
            filters, 3, padding=padding, use_bias=not batch_norm, kernel_initializer=init, name=f"{name}_conv{i}"
        )(x)
        if batch_norm:
            x = layers.BatchNormalization(name=f"{name}_bn{i}")(x)
        x = layers.Activation("relu", name=f"{name}_relu{i}")(x)
    if dropout > 0:
        x = layers.Dropout(dropout, name=f"{name}_dropout")(x)
    return x


def check_common(depth: int, base_filters: int, num_classes: int, dropout: float = 0.0) -> None:
    if depth < 1:
        raise ConfigError(f"model.depth={depth} is invalid: must be an integer >= 1")
    if base_filters < 1:
        raise ConfigError(f"model.base_filters={base_filters} is invalid: must be an integer >= 1")
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"model.dropout={dropout} is invalid: must be in [0, 1)")
    if num_classes < 2:
        raise ConfigError(f"num_classes={num_classes} is invalid: segmentation needs >= 2 classes")


def check_poolable(height: int, width: int, depth: int) -> None:
    for level in range(1, depth + 1):
        if height % 2**level or width % 2**level:
            raise ConfigError(
                f"input size {height}x{width} cannot pass layer encoder{level}_pool: every 2x2 pooling "
                f"needs an even size, so model.depth={depth} needs height and width divisible by {2**depth}"
            )


def unet(
    input_shape: tuple[int, int, int],
    num_classes: int,
    depth: int = 4,
    base_filters: int = 64,
    batch_norm: bool = True,
    dropout: float = 0.0,
    upsampling: str = "transpose",
    stem: str | None = None,
    stem_trainable: bool = False,
    stem_options: dict | None = None,
) -> keras.Model:
    """Encoder (conv blocks + 2x2 max pooling) -> bottleneck -> decoder (upsampling + skip concat + conv block).

    Filters double at each of the `depth` pooling steps; a 1x1 conv and softmax give per-pixel class
    probabilities. The input is raw pixel values in [0, 255]; rescaling happens inside the model so a
    logged model can be served on plain images. `stem` puts a classic filter bank ('sobel', 'gabor', 'dog':
    centre-surround cells) in front of the encoder, fixed or (stem_trainable) as the initialisation of a
    learned first layer; `stem_options` are the bank's arguments (e.g. dog: size, scales, balance).
    """
    check_common(depth, base_filters, num_classes, dropout)
    if upsampling not in UPSAMPLING:
        raise ConfigError(f"model.upsampling={upsampling!r} is unknown; valid: {', '.join(UPSAMPLING)}")
    check_poolable(*input_shape[:2], depth)

    inputs = keras.Input(shape=input_shape, name="images")
    x = layers.Rescaling(1.0 / 255, name="rescale")(inputs)
    if stem is not None:
        x = FixedKernelConv2D(stem, stem_options, trainable=stem_trainable, name="stem")(x)
    skips, switches = [], []
    for level in range(depth):
        x = conv_block(x, base_filters * 2**level, batch_norm, 0.0, name=f"encoder{level + 1}")
        skips.append(x)
        if upsampling == "unpool":
            x, switch = MaxPoolingWithSwitches2D(2, name=f"encoder{level + 1}_pool")(x)
            switches.append(switch)
        else:
            x = layers.MaxPooling2D(2, name=f"encoder{level + 1}_pool")(x)
    x = conv_block(x, base_filters * 2**depth, batch_norm, dropout, name="bottleneck")
    for level in reversed(range(depth)):
        filters, name = base_filters * 2**level, f"decoder{level + 1}"
        if upsampling == "transpose":
            x = layers.Conv2DTranspose(filters, 2, strides=2, name=f"{name}_upconv")(x)
        elif upsampling == "bilinear":
            x = layers.UpSampling2D(2, interpolation="bilinear", name=f"{name}_upsample")(x)
            x = layers.Conv2D(filters, 3, padding="same", name=f"{name}_upconv")(x)
        else:  # unpool: match the switches' channels, then put values back where the encoder's maxima were
            x = layers.Conv2D(filters, 1, name=f"{name}_reduce")(x)
            x = MaxUnpooling2D(2, name=f"{name}_unpool")([x, switches[level]])
        x = layers.Concatenate(name=f"{name}_skip")([x, skips[level]])
        x = conv_block(x, filters, batch_norm, dropout if level == depth - 1 else 0.0, name=name)
    outputs = layers.Conv2D(num_classes, 1, activation="softmax", dtype="float32", name="classifier")(x)
    return keras.Model(inputs, outputs, name="unet")


def paper_output_size(size: int, depth: int) -> int:
    """Output size of the unpadded U-Net for an input of `size`; raises naming the layer that cannot be built."""
    for level in range(1, depth + 1):
        size -= 4  # two unpadded 3x3 convs
        if size < 2 or size % 2:
            raise ConfigError(
                f"layer encoder{level}_pool gets a {size}-pixel map: the unpadded U-Net needs an even size >= 2 "
                "before every pooling (the paper's 572 works for depth 4)"
            )
        size //= 2
    size -= 4  # bottleneck
    for _ in range(depth):
        size = size * 2 - 4  # 2x2 up-conv, then two unpadded convs
    if size < 1:
        raise ConfigError(f"the unpadded U-Net of depth {depth} leaves no output for this input")
    return size


def overlap_tile_size(size: int, depth: int) -> int:
    """The smallest valid input size >= size whose unpadded U-Net output is at least `size`."""
    for candidate in range(size, size + 64 * 2**depth):
        try:
            if paper_output_size(candidate, depth) >= size:
                return candidate
        except ConfigError:
            continue
    raise ConfigError(f"no overlap-tile input size found for a {size}-pixel image at depth {depth}")


def unet_paper(
    input_shape: tuple[int, int, int],
    num_classes: int,
    depth: int = 4,
    base_filters: int = 64,
    overlap_tile: bool = False,
) -> keras.Model:
    """The 2015 paper's U-Net: valid convs, cropped skips; 572 -> 388 at depth 4 (see module docstring)."""
    check_common(depth, base_filters, num_classes)
    height, width = input_shape[:2]
    inputs = keras.Input(shape=input_shape, name="images")
    x = layers.Rescaling(1.0 / 255, name="rescale")(inputs)
    if overlap_tile:
        pads = []
        for size in (height, width):
            padded = overlap_tile_size(size, depth)
            before = (padded - size) // 2
            if max(before, padded - size - before) >= size:
                raise ConfigError(
                    f"overlap-tile needs {padded - size} px of mirrored context around a {size}-px image at depth "
                    f"{depth}: more than the image holds; use a smaller model.depth or larger images"
                )
            pads.append((before, padded - size - before))
        x = MirrorPadding2D(tuple(pads), name="overlap_tile")(x)
    else:
        paper_output_size(height, depth)
        paper_output_size(width, depth)
    skips = []
    for level in range(depth):
        x = conv_block(x, base_filters * 2**level, False, 0.0, f"encoder{level + 1}", "valid", HE)
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"encoder{level + 1}_pool")(x)
    x = conv_block(x, base_filters * 2**depth, False, 0.0, "bottleneck", "valid", HE)
    for level in reversed(range(depth)):
        filters, name = base_filters * 2**level, f"decoder{level + 1}"
        x = layers.Conv2DTranspose(filters, 2, strides=2, kernel_initializer=HE, name=f"{name}_upconv")(x)
        skip = skips[level]
        crop = [(s - t) // 2 for s, t in zip(skip.shape[1:3], x.shape[1:3])]
        skip = layers.Cropping2D(
            ((crop[0], skip.shape[1] - x.shape[1] - crop[0]), (crop[1], skip.shape[2] - x.shape[2] - crop[1])),
            name=f"{name}_crop",
        )(skip)
        x = layers.Concatenate(name=f"{name}_skip")([x, skip])
        x = conv_block(x, filters, False, 0.0, name, "valid", HE)
    x = layers.Conv2D(num_classes, 1, dtype="float32", name="classifier")(x)
    if overlap_tile:  # back to the input's own size
        extra = [(o - s) for o, s in zip(x.shape[1:3], (height, width))]
        x = layers.Cropping2D(
            ((extra[0] // 2, extra[0] - extra[0] // 2), (extra[1] // 2, extra[1] - extra[1] // 2)), name="tile_crop"
        )(x)
    outputs = layers.Activation("softmax", dtype="float32", name="softmax")(x)
    return keras.Model(inputs, outputs, name="unet_paper")
