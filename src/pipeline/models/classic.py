"""The lecture's classifiers, from the first CNNs to the deep ones, as builders of plain arguments.

Each takes the input shape and class count from the data and returns a keras.Model ending in a
softmax. Inputs are raw pixel values in [0, 255]; each model rescales them itself.
"""

import keras
from keras import layers, ops

from pipeline.errors import ConfigError

RESNET_LAYOUTS = {
    "resnet18": ("basic", (2, 2, 2, 2)),
    "resnet34": ("basic", (3, 4, 6, 3)),
    "resnet50": ("bottleneck", (3, 4, 6, 3)),
}


def _check(num_classes: int, **positive) -> None:
    if num_classes < 2:
        raise ConfigError(f"num_classes={num_classes} is invalid: classification needs >= 2 classes")
    for key, value in positive.items():
        values = value if isinstance(value, (list, tuple)) else [value]
        if any(not isinstance(v, int) or v < 1 for v in values):
            raise ConfigError(f"model.{key}={value!r} is invalid: must be a positive integer (or a list of them)")


def _head(x, num_classes: int, name: str = "predictions"):
    return layers.Dense(num_classes, activation="softmax", dtype="float32", name=name)(x)


def lenet5(input_shape: tuple[int, int, int], num_classes: int, activation: str = "tanh") -> keras.Model:
    """LeNet-5 (LeCun et al. 1998): C1 6@5x5, S2 2x2, C3 16@5x5, S4 2x2, C5 120@5x5, F6 84, output.

    On 32x32x1 with 10 classes: 61,706 parameters. Subsampling is average pooling (the paper's S layers
    also had a trainable coefficient and bias per map, left out as in most re-implementations); C3 is
    fully connected to S2 (the paper's sparse connection table was an economy of its time).
    """
    _check(num_classes)
    if min(input_shape[:2]) < 28:
        raise ConfigError(
            f"LeNet-5 needs inputs of at least 28x28 (got {input_shape[0]}x{input_shape[1]}); set data.image_size=32"
        )
    inputs = keras.Input(input_shape, name="images")
    x = layers.Rescaling(1 / 255.0, name="rescale")(inputs)
    x = layers.Conv2D(6, 5, activation=activation, name="C1")(x)
    x = layers.AveragePooling2D(2, name="S2")(x)
    x = layers.Conv2D(16, 5, activation=activation, name="C3")(x)
    x = layers.AveragePooling2D(2, name="S4")(x)
    x = layers.Conv2D(120, 5, activation=activation, name="C5")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(84, activation=activation, name="F6")(x)
    return keras.Model(inputs, _head(x, num_classes), name="lenet5")


def mlp(
    input_shape: tuple[int, int, int], num_classes: int, hidden: list[int] = (256, 128), dropout: float = 0.0
) -> keras.Model:
    """Fully-connected baseline: every pixel to every hidden unit, no locality, no weight sharing."""
    _check(num_classes, hidden=list(hidden))
    inputs = keras.Input(input_shape, name="images")
    x = layers.Flatten(name="flatten")(layers.Rescaling(1 / 255.0, name="rescale")(inputs))
    for i, units in enumerate(hidden, start=1):
        x = layers.Dense(units, activation="relu", name=f"fc{i}")(x)
        if dropout:
            x = layers.Dropout(dropout, name=f"fc{i}_dropout")(x)
    return keras.Model(inputs, _head(x, num_classes), name="mlp")


def convnet(
    input_shape: tuple[int, int, int],
    num_classes: int,
    n: int | list[int] = 2,
    m: int = 3,
    k: int = 1,
    filters: int = 32,
    kernel_size: int = 3,
    pool: bool = True,
    fc_units: int = 128,
    batch_norm: bool = False,
    dropout: float = 0.0,
    global_pool: bool | str = False,
) -> keras.Model:
    """The lecture's typical architecture [(CONV-RELU)^N - POOL?]^M - (FC-RELU)^K - SOFTMAX.

    `n` may be one N for every stage or a list with one per stage (VGG-11 is n=[1, 1, 2, 2, 2], m=5);
    filters double at each stage. With pool=False the stages keep their resolution. global_pool=True (or
    "max") replaces Flatten by global max pooling: the features no longer depend on where they were found;
    "avg" by global average pooling: each feature becomes the share of the image where it fires (what a
    coverage regressor needs).
    """
    per_stage = list(n) if isinstance(n, (list, tuple)) else [n] * m
    _check(num_classes, n=per_stage, m=m, filters=filters, kernel_size=kernel_size)
    if len(per_stage) != m:
        raise ConfigError(f"model.n has {len(per_stage)} entries but model.m={m} stages")
    if not 0 <= k <= 2:
        raise ConfigError(f"model.k={k} is invalid: the lecture's K is 0, 1 or 2")
    size = min(input_shape[:2])
    if pool and size < 2**m:
        raise ConfigError(f"layer stage{m}_pool: {m} 2x2 poolings need inputs of at least {2**m} px (got {size})")
    inputs = keras.Input(input_shape, name="images")
    x = layers.Rescaling(1 / 255.0, name="rescale")(inputs)
    for stage, convs in enumerate(per_stage, start=1):
        for i in range(1, convs + 1):
            x = layers.Conv2D(
                filters * 2 ** (stage - 1),
                kernel_size,
                padding="same",
                use_bias=not batch_norm,
                name=f"stage{stage}_conv{i}",
            )(x)
            if batch_norm:
                x = layers.BatchNormalization(name=f"stage{stage}_bn{i}")(x)
            x = layers.Activation("relu", name=f"stage{stage}_relu{i}")(x)
        if pool:
            x = layers.MaxPooling2D(2, name=f"stage{stage}_pool")(x)
    if global_pool not in (True, False, "max", "avg"):
        raise ConfigError(f"model.global_pool={global_pool!r} is invalid; valid: false, true (max), max, avg")
    if global_pool == "avg":
        x = layers.GlobalAveragePooling2D(name="global_pool")(x)
    elif global_pool:
        x = layers.GlobalMaxPooling2D(name="global_pool")(x)
    else:
        x = layers.Flatten(name="flatten")(x)
    for i in range(1, k + 1):
        x = layers.Dense(fc_units, activation="relu", name=f"fc{i}")(x)
        if dropout:
            x = layers.Dropout(dropout, name=f"fc{i}_dropout")(x)
    return keras.Model(inputs, _head(x, num_classes), name="convnet")


@keras.saving.register_keras_serializable(package="pipeline")
class LocalResponseNormalization(keras.layers.Layer):
    """AlexNet's LRN across channels: b_c = a_c / (k + alpha/n * sum_{c' within n/2 of c} a_c'^2)^beta."""

    def __init__(self, depth_radius: int = 2, bias: float = 2.0, alpha: float = 1e-4, beta: float = 0.75, **kwargs):
        super().__init__(**kwargs)
        self.depth_radius, self.bias, self.alpha, self.beta = depth_radius, bias, alpha, beta

    def call(self, inputs):
        squared = ops.square(inputs)
        r = self.depth_radius
        padded = ops.pad(squared, [[0, 0], [0, 0], [0, 0], [r, r]])
        channels = inputs.shape[-1]
        window = sum(padded[..., i : i + channels] for i in range(2 * r + 1))
        return inputs / ops.power(self.bias + self.alpha / (2 * r + 1) * window, self.beta)

    def get_config(self):
        return {
            **super().get_config(),
            "depth_radius": self.depth_radius,
            "bias": self.bias,
            "alpha": self.alpha,
            "beta": self.beta,
        }


def alexnet(
    input_shape: tuple[int, int, int],
    num_classes: int,
    width: float = 1.0,
    lrn: bool = True,
    small_input: bool = False,
    dropout: float = 0.5,
) -> keras.Model:
    """AlexNet (Krizhevsky et al. 2012): 5 convs (96, 256, 384, 384, 256 filters x width), 3 FC layers.

    small_input swaps the 11x11 stride-4 stem for a 3x3 stride-1 one and the 3x3/2 overlapping
    pools stay, so 32-px images keep enough resolution; lrn adds the paper's local response normalisation.
    """
    _check(num_classes)
    f = [max(1, int(c * width)) for c in (96, 256, 384, 384, 256)]
    fc = max(8, int(4096 * width))
    inputs = keras.Input(input_shape, name="images")
    x = layers.Rescaling(1 / 255.0, name="rescale")(inputs)
    if small_input:
        x = layers.Conv2D(f[0], 3, padding="same", activation="relu", name="conv1")(x)
    else:
        x = layers.Conv2D(f[0], 11, strides=4, padding="same", activation="relu", name="conv1")(x)
    if lrn:
        x = LocalResponseNormalization(name="lrn1")(x)
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="pool1")(x)
    x = layers.Conv2D(f[1], 5, padding="same", activation="relu", name="conv2")(x)
    if lrn:
        x = LocalResponseNormalization(name="lrn2")(x)
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="pool2")(x)
    for i, filters in enumerate(f[2:], start=3):
        x = layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"conv{i}")(x)
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="pool5")(x)
    x = layers.Flatten(name="flatten")(x)
    for i in (6, 7):
        x = layers.Dropout(dropout, name=f"fc{i}_dropout")(layers.Dense(fc, activation="relu", name=f"fc{i}")(x))
    return keras.Model(inputs, _head(x, num_classes), name="alexnet")


def _residual(x, filters: int, stride: int, block: str, name: str):
    """He et al. 2016: out = relu(F(x) + shortcut(x)); a 1x1 projection when the shape changes."""
    out_channels = filters * (4 if block == "bottleneck" else 1)
    shortcut = x
    if stride != 1 or x.shape[-1] != out_channels:
        shortcut = layers.Conv2D(out_channels, 1, strides=stride, use_bias=False, name=f"{name}_proj")(x)
        shortcut = layers.BatchNormalization(name=f"{name}_proj_bn")(shortcut)
    if block == "basic":
        specs = [(filters, 3, stride), (filters, 3, 1)]
    else:
        specs = [(filters, 1, 1), (filters, 3, stride), (out_channels, 1, 1)]
    y = x
    for i, (f, kernel, s) in enumerate(specs, start=1):
        y = layers.Conv2D(f, kernel, strides=s, padding="same", use_bias=False, name=f"{name}_conv{i}")(y)
        y = layers.BatchNormalization(name=f"{name}_bn{i}")(y)
        if i < len(specs):
            y = layers.Activation("relu", name=f"{name}_relu{i}")(y)
    return layers.Activation("relu", name=f"{name}_out")(layers.Add(name=f"{name}_add")([shortcut, y]))


def resnet(
    input_shape: tuple[int, int, int],
    num_classes: int,
    layout: str = "resnet18",
    width: int = 64,
    small_input: bool = False,
) -> keras.Model:
    """ResNet (He et al. 2016) with basic (ResNet-18/34) or bottleneck (ResNet-50) blocks.

    small_input replaces the 7x7/2 stem and its max pool with one 3x3/1 conv (the CIFAR-style variant).
    """
    if layout not in RESNET_LAYOUTS:
        raise ConfigError(f"model.layout={layout!r} is unknown; valid: {', '.join(RESNET_LAYOUTS)}")
    _check(num_classes, width=width)
    block, repeats = RESNET_LAYOUTS[layout]
    inputs = keras.Input(input_shape, name="images")
    x = layers.Rescaling(1 / 255.0, name="rescale")(inputs)
    if small_input:
        x = layers.Conv2D(width, 3, padding="same", use_bias=False, name="stem_conv")(x)
    else:
        x = layers.Conv2D(width, 7, strides=2, padding="same", use_bias=False, name="stem_conv")(x)
    x = layers.Activation("relu", name="stem_relu")(layers.BatchNormalization(name="stem_bn")(x))
    if not small_input:
        x = layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)
    for stage, count in enumerate(repeats):
        for b in range(count):
            stride = 2 if b == 0 and stage > 0 else 1
            x = _residual(x, width * 2**stage, stride, block, name=f"stage{stage + 1}_block{b + 1}")
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return keras.Model(inputs, _head(x, num_classes), name=layout)


def inception(x, f1: int, f3r: int, f3: int, f5r: int, f5: int, fp: int, name: str):
    """Inception module (Szegedy et al. 2015): 1x1 | 1x1->3x3 | 1x1->5x5 | 3x3 pool->1x1, concatenated."""

    def conv(t, f, k, suffix):
        return layers.Conv2D(f, k, padding="same", activation="relu", name=f"{name}_{suffix}")(t)

    b1 = conv(x, f1, 1, "1x1")
    b2 = conv(conv(x, f3r, 1, "3x3_reduce"), f3, 3, "3x3")
    b3 = conv(conv(x, f5r, 1, "5x5_reduce"), f5, 5, "5x5")
    b4 = conv(layers.MaxPooling2D(3, strides=1, padding="same", name=f"{name}_pool")(x), fp, 1, "pool_proj")
    return layers.Concatenate(name=f"{name}_concat")([b1, b2, b3, b4])


GOOGLENET_MODULES = {  # Szegedy et al. 2015, table 1: #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj
    "3a": (64, 96, 128, 16, 32, 32),
    "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64),
    "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128),
    "5b": (384, 192, 384, 48, 128, 128),
}


def googlenet(
    input_shape: tuple[int, int, int],
    num_classes: int,
    width: float = 1.0,
    small_input: bool = False,
    aux_heads: bool = False,
) -> keras.Model:
    """GoogLeNet (Szegedy et al. 2015): stem, nine Inception modules, global average pooling.

    width scales every branch; small_input uses a 3x3/1 stem without the early poolings. aux_heads adds
    the paper's two auxiliary classifiers on 4a and 4d (extra outputs, weighted 0.3 in the loss).
    """
    _check(num_classes)

    def scaled(spec):
        return [max(1, int(c * width)) for c in spec]

    inputs = keras.Input(input_shape, name="images")
    x = layers.Rescaling(1 / 255.0, name="rescale")(inputs)
    if small_input:
        x = layers.Conv2D(max(8, int(192 * width)), 3, padding="same", activation="relu", name="stem_conv")(x)
    else:
        x = layers.Conv2D(max(8, int(64 * width)), 7, strides=2, padding="same", activation="relu", name="stem_conv1")(
            x
        )
        x = layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool1")(x)
        x = layers.Conv2D(max(8, int(192 * width)), 3, padding="same", activation="relu", name="stem_conv2")(x)
        x = layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool2")(x)
    aux = []
    for module, spec in GOOGLENET_MODULES.items():
        if module in ("4a", "5a"):
            x = layers.MaxPooling2D(3, strides=2, padding="same", name=f"pool_before_{module}")(x)
        x = inception(x, *scaled(spec), name=f"inception_{module}")
        if aux_heads and module in ("4a", "4d"):
            a = layers.AveragePooling2D(5, strides=3, padding="same", name=f"aux_{module}_pool")(x)
            a = layers.Conv2D(max(8, int(128 * width)), 1, activation="relu", name=f"aux_{module}_conv")(a)
            a = layers.Flatten(name=f"aux_{module}_flatten")(a)
            a = layers.Dense(max(16, int(1024 * width)), activation="relu", name=f"aux_{module}_fc")(a)
            a = layers.Dropout(0.7, name=f"aux_{module}_dropout")(a)
            aux.append(_head(a, num_classes, name=f"aux_{module}"))
    x = layers.Dropout(0.4, name="dropout")(layers.GlobalAveragePooling2D(name="avg_pool")(x))
    outputs = _head(x, num_classes)
    return keras.Model(inputs, [outputs, *aux] if aux else outputs, name="googlenet")


def neocognitron(
    input_shape: tuple[int, int, int], num_classes: int, stages: int = 3, filters: int = 16, kernel_size: int = 5
) -> keras.Model:
    """Neocognitron-style (Fukushima 1980): alternating S-cell layers (local feature extraction: convolution
    + rectification) and C-cell layers (tolerance to shifts: local pooling), filters doubling per stage.

    Trained by backpropagation here rather than by Fukushima's self-organisation.
    """
    _check(num_classes, stages=stages, filters=filters, kernel_size=kernel_size)
    if min(input_shape[:2]) < 2**stages:
        raise ConfigError(f"layer C{stages}: {stages} C-cell poolings need inputs of at least {2**stages} px")
    inputs = keras.Input(input_shape, name="images")
    x = layers.Rescaling(1 / 255.0, name="rescale")(inputs)
    for s in range(1, stages + 1):
        x = layers.Conv2D(filters * 2 ** (s - 1), kernel_size, padding="same", activation="relu", name=f"S{s}")(x)
        x = layers.AveragePooling2D(2, name=f"C{s}")(x)
    x = layers.Flatten(name="flatten")(x)
    return keras.Model(inputs, _head(x, num_classes), name="neocognitron")
