"""DeepLabV3+ (Chen et al. 2018, "Encoder-Decoder with Atrous Separable Convolution for Semantic Image
Segmentation"): the modern head beside the lecture's U-Net. Where the U-Net joins every level of its encoder on the
way up, DeepLabV3+ pools one deep level at several dilation rates at once (atrous spatial pyramid pooling, ASPP: a
1x1 convolution, 3x3 convolutions dilated by each rate, and the image's mean, side by side), upsamples that, joins
one shallow level projected to a few channels, refines the two with 3x3 convolutions, and upsamples to the image.

The encoder is a keras.applications network or a KerasHub image backbone's feature pyramid (a preset name, or a
local preset folder), cut after the deep level: deeper stages would compute what nothing reads. The head is written
here in core Keras layers, not taken from KerasHub's DeepLabV3Backbone: in keras-hub 0.32 with Keras 3.15 a plain
call of that model (training unset, as an export traces it) runs its ASPP projection's batch norm in training mode
(the nested Resizing layer's `training=True` default leaks to its siblings: keras-team/keras-hub#2495, fixed in
keras-team/keras#23166 after 3.15), so its exports disagree with it and each such call moves its statistics.
"""

import keras
from keras import layers

from pipeline.errors import ConfigError
from pipeline.models.backbones import (
    APPLICATIONS,
    application,
    hub_backbone,
    pyramid_model,
    refuse_weights_for_preset,
    set_batch_norm_momentum,
    skip_layers,
)


def deeplabv3plus(
    input_shape: tuple[int, int, int],
    num_classes: int,
    backbone: str = "MobileNetV2",
    weights: str | None = None,
    alpha: float | None = 0.35,
    aspp_level: int = 4,
    low_level: int = 2,
    dilation_rates: tuple[int, ...] = (1, 2, 3),
    filters: int = 64,
    projection_filters: int = 48,
    dropout: float = 0.1,
    freeze_encoder: bool = False,
    bn_momentum: float | None = 0.99,
) -> keras.Model:
    """raw pixels -> encoder -> ASPP on its stride-2**aspp_level map -> 1x1 projection -> up to the
    stride-2**low_level map, joined with it (1x1 conv to `projection_filters`) -> (3x3 conv-BN-ReLU) x 2 -> up to
    the image -> 1x1 conv softmax.

    aspp_level 4 is the paper's output stride 16; its rates (6, 12, 18) are for 513-pixel crops (33x33 maps at
    stride 16), so a 64-pixel image (4x4 maps) takes (1, 2, 3): a rate as wide as the map sees only padding.
    The paper's 256 filters are for 21 classes at 513 pixels; `filters` sets the ASPP's and the decoder's.
    weights: a keras.applications network's (None: random, 'imagenet', or a local file); a KerasHub preset
    carries its own. freeze_encoder keeps the encoder's weights and batch norm statistics; the head trains.
    bn_momentum: the encoder's batch norm momentum (None: the network's own; `set_batch_norm_momentum` says why
    0.99)."""
    if num_classes < 2:
        raise ConfigError(f"num_classes={num_classes} is invalid: segmentation needs >= 2 classes")
    rates = [int(rate) for rate in dilation_rates]
    if not rates or min(rates) < 1 or len(set(rates)) < len(rates):
        raise ConfigError(f"model.dilation_rates={list(dilation_rates)} is invalid: one or more different rates >= 1")
    if not 0 <= dropout < 1:
        raise ConfigError(f"model.dropout={dropout} is invalid: must be in [0, 1)")
    if low_level >= aspp_level:
        raise ConfigError(f"model.low_level={low_level} must be shallower than model.aspp_level={aspp_level}; "
                          f"valid: low_level < aspp_level")  # fmt: skip
    encoder = two_level_encoder(backbone, input_shape, weights, alpha, low_level, aspp_level)
    set_batch_norm_momentum(encoder, bn_momentum, backbone)
    encoder.trainable = not freeze_encoder

    inputs = keras.Input(input_shape, name="images")
    shallow, deep = encoder(inputs, training=False if freeze_encoder else None)
    x = aspp(deep, rates, filters, dropout)
    x = layers.UpSampling2D(2 ** (aspp_level - low_level), interpolation="bilinear", name="aspp_upsampling")(x)
    shallow = conv_bn_relu(shallow, projection_filters, 1, name="low_level_projection")
    x = layers.Concatenate(name="decoder_join")([x, shallow])
    x = conv_bn_relu(x, filters, 3, name="decoder_conv1")
    x = conv_bn_relu(x, filters, 3, name="decoder_conv2")
    x = layers.UpSampling2D(2**low_level, interpolation="bilinear", name="decoder_upsampling")(x)
    outputs = layers.Conv2D(num_classes, 1, activation="softmax", dtype="float32", name="classifier")(x)
    return keras.Model(inputs, outputs, name=f"{encoder.name.removesuffix('_encoder')}_deeplabv3plus")


def aspp(x, rates: list[int], filters: int, dropout: float):
    """Atrous spatial pyramid pooling (Chen et al. 2017, section 3.3): a 1x1 conv, a 3x3 conv per dilation rate
    and the map's mean (pooled, 1x1 conv, spread back over the map), each with batch norm and ReLU, joined and
    projected by a 1x1 conv."""
    height, width = x.shape[1], x.shape[2]
    branches = [conv_bn_relu(x, filters, 1, name="aspp_1x1")]
    branches += [conv_bn_relu(x, filters, 3, dilation=rate, name=f"aspp_rate{rate}") for rate in rates]
    pooled = layers.GlobalAveragePooling2D(keepdims=True, name="aspp_image_pool")(x)
    pooled = conv_bn_relu(pooled, filters, 1, name="aspp_image")
    branches.append(layers.UpSampling2D((height, width), name="aspp_image_spread")(pooled))
    x = layers.Concatenate(name="aspp_join")(branches)
    x = conv_bn_relu(x, filters, 1, name="aspp_projection")
    return layers.Dropout(dropout, name="aspp_dropout")(x) if dropout else x


def conv_bn_relu(x, filters: int, size: int, dilation: int = 1, name: str = "conv"):
    x = layers.Conv2D(filters, size, padding="same", dilation_rate=dilation, use_bias=False, name=name)(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def two_level_encoder(
    backbone: str, input_shape: tuple[int, int, int], weights: str | None, alpha: float | None, low: int, deep: int
) -> keras.Model:
    """From raw pixels to the encoder's maps at strides 2**low and 2**deep: a keras.applications network's (the
    last layer at each stride) or a KerasHub preset's pyramid levels P<low>, P<deep> (through its preset's pixel
    scaling). The layers only deeper maps need are left out."""
    if backbone in APPLICATIONS:
        network = application(backbone, input_shape, weights, alpha if backbone == "MobileNetV2" else None)
        names = skip_layers(network)
        maps = {level: network.get_layer(layer).output for level, layer in enumerate(names, start=1)}
        maps[len(names) + 1] = network.output
        check_levels(backbone, input_shape, sorted(maps), low, deep)
        return keras.Model(network.inputs, [maps[low], maps[deep]], name=f"{backbone}_encoder")
    refuse_weights_for_preset(backbone, weights)
    hub, levels, scaling = hub_backbone(backbone, input_shape, "for DeepLabV3+ to pool and join", deepest=deep)
    check_levels(backbone, input_shape, levels, low, deep)
    return pyramid_model(hub, scaling, input_shape, [low, deep], f"{hub.name}_encoder")


def check_levels(backbone: str, input_shape: tuple[int, int, int], levels: list[int], low: int, deep: int) -> None:
    for key, level in (("low_level", low), ("aspp_level", deep)):
        if level not in levels:
            raise ConfigError(f"model.{key}={level}: model.backbone={backbone!r} gives maps at levels "
                              f"{', '.join(map(str, levels))} (stride 2**level) for {input_shape[0]}x"
                              f"{input_shape[1]} images; valid: one of them")  # fmt: skip
