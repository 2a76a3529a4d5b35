"""U-Net on a pretrained encoder: the lecture's transfer recipe for segmentation.

The encoder (a keras.applications network, a KerasHub image backbone's feature pyramid, or a trained
classifier of this pipeline) gives the skip features at strides 2, 4, 8, ... (a pyramid may start at 4);
a U-Net decoder upsamples its output back to the image, joining each skip on the way, as in
Ronneberger et al. 2015 but with the encoder borrowed.
"""

import keras
from keras import layers

from pipeline.errors import ConfigError
from pipeline.models.backbones import (
    APPLICATIONS,
    application,
    hub_pyramid,
    pyramid_levels,
    refuse_weights_for_preset,
    set_batch_norm_momentum,
    skip_layers,
)
from pipeline.models.unet import conv_block


def backbone_unet(
    encoder: keras.Model,
    num_classes: int,
    base_filters: int = 16,
    skips: list[str] | None = None,
    encoder_training: bool | None = False,
) -> keras.Model:
    """encoder -> [up 2x, concat skip, (CONV-BN-RELU) x 2] per skip -> up 2x -> 1x1 conv softmax.

    encoder_training=False calls the encoder in inference mode (batch norm statistics kept), as
    for a frozen or fine-tuned encoder; None lets it train like the rest (training from scratch).
    """
    names = list(skips) if skips is not None else skip_layers(encoder)
    try:
        taps = [encoder.get_layer(name).output for name in names]
    except ValueError as err:
        raise ConfigError(f"model.skips: {err}") from None
    tapped = keras.Model(encoder.inputs, [*taps, encoder.output], name="encoder")
    return pyramid_unet(tapped, 1, num_classes, base_filters, encoder_training, f"{encoder.name}_unet")


def pyramid_unet(
    tapped: keras.Model,
    first_level: int,
    num_classes: int,
    base_filters: int = 16,
    encoder_training: bool | None = False,
    name: str = "pyramid_unet",
) -> keras.Model:
    """The U-Net decoder on an encoder whose outputs are its feature maps at strides 2**first_level,
    2**(first_level + 1), ..., the last the deepest: up 2x and join each skip, then up 2x (without a skip)
    until the image's own size, and a 1x1 softmax."""
    if num_classes < 2:
        raise ConfigError(f"num_classes={num_classes} is invalid: segmentation needs >= 2 classes")
    inputs = keras.Input(tapped.inputs[0].shape[1:], name="images")
    *features, x = tapped(inputs, training=encoder_training)
    for level, skip in reversed(list(enumerate(features, start=first_level))):
        filters = base_filters * 2**level
        x = layers.Conv2DTranspose(filters, 2, strides=2, name=f"decoder{level + 1}_upconv")(x)
        x = layers.Concatenate(name=f"decoder{level + 1}_skip")([x, skip])
        x = conv_block(x, filters, batch_norm=True, dropout=0.0, name=f"decoder{level + 1}")
    for level in reversed(range(first_level)):  # below the shallowest skip: upsampling alone
        filters = base_filters * 2**level
        x = layers.Conv2DTranspose(filters, 2, strides=2, name=f"decoder{level + 1}_upconv")(x)
        x = conv_block(x, filters, batch_norm=True, dropout=0.0, name=f"decoder{level + 1}")
    outputs = layers.Conv2D(num_classes, 1, activation="softmax", dtype="float32", name="classifier")(x)
    return keras.Model(inputs, outputs, name=name)


def unet_backbone(
    input_shape: tuple[int, int, int],
    num_classes: int,
    backbone: str = "MobileNetV2",
    weights: str | None = None,
    alpha: float | None = 0.35,
    base_filters: int = 16,
    freeze_encoder: bool = False,
    bn_momentum: float | None = 0.99,
) -> keras.Model:
    """The train stage's form: a keras.applications encoder (weights: a local file, 'imagenet' or
    None), or a KerasHub image backbone from its preset (a name, or a local preset folder, its weights
    with it: skips from its feature pyramid), frozen or not. bn_momentum: the encoder's batch norm momentum
    (None: the network's own; `set_batch_norm_momentum` says why 0.99). The transfer stage builds the same decoder
    on any backbone."""
    training = False if freeze_encoder else None
    if backbone not in APPLICATIONS:
        refuse_weights_for_preset(backbone, weights)
        tapped = hub_pyramid(backbone, input_shape)
        set_batch_norm_momentum(tapped, bn_momentum, backbone)
        tapped.trainable = not freeze_encoder
        name = f"{tapped.name.removesuffix('_pyramid')}_unet"
        return pyramid_unet(tapped, pyramid_levels(tapped), num_classes, base_filters, training, name)
    encoder = application(backbone, input_shape, weights, alpha if backbone == "MobileNetV2" else None)
    set_batch_norm_momentum(encoder, bn_momentum, backbone)
    encoder.trainable = not freeze_encoder
    return backbone_unet(encoder, num_classes, base_filters, encoder_training=training)
