"""Backbones for transfer learning (the lecture's recipe: train on a large set, reuse on a small one).

A backbone is a keras.Model from raw images in [0, 255] to features: either a classifier of this
pipeline cut below its softmax head, or a keras.applications network with weights from a local
file (or ImageNet's, where the machine can download). Its blocks (groups of layers by name: stage2,
block_16, conv5, C5, ...) are what `fine_tune` unfreezes from the top.
"""

import difflib
import logging
import re
import warnings
from pathlib import Path

import keras
from keras import layers

from pipeline.errors import ConfigError, DataError
from pipeline.models.layers import ImagenetPreprocessing

log = logging.getLogger(__name__)

# name -> (builder, the input preprocessing its ImageNet weights expect)
APPLICATIONS = {
    "MobileNetV2": (keras.applications.MobileNetV2, "tf"),
    "ResNet50": (keras.applications.ResNet50, "caffe"),
    "EfficientNetB0": (keras.applications.EfficientNetB0, "none"),  # rescales inside
    "VGG16": (keras.applications.VGG16, "caffe"),
}
# stage2_conv1 -> stage2, block_16_project -> block_16, conv5_block3_2_conv -> conv5, C5 -> C5
BLOCK = re.compile(r"[A-Za-z]+_\d+(?=_|$)|[^_]+")
NORMALIZATION = (layers.BatchNormalization, layers.LayerNormalization, layers.GroupNormalization)


def classifier_backbone(model: keras.Model) -> keras.Model:
    """A trained classifier up to its last feature layer: what its (first) softmax head sees."""
    head = model.get_layer(model.output_names[0])
    return keras.Model(model.inputs, head.input, name=f"{model.name}_backbone")


def feature_map_backbone(model: keras.Model) -> keras.Model:
    """A trained model up to its last spatial feature map (B, H, W, C): a U-Net encoder."""
    maps = [layer for layer in model.layers[1:] if len(layer.output.shape) == 4]
    if not maps:
        raise ConfigError(f"model {model.name} has no spatial feature map to use as an encoder")
    return keras.Model(model.inputs, maps[-1].output, name=f"{model.name}_encoder")


def describe(name: str, input_shape: tuple[int, ...], alpha: float | None) -> str:
    width = f", alpha={alpha}" if alpha is not None else ""
    return f"{name}(include_top=False{width}, input {input_shape[0]}x{input_shape[1]}x3)"


def application(
    name: str, input_shape: tuple[int, int, int], weights: str | None = None, alpha: float | None = None
) -> keras.Model:
    """keras.applications network `name` without its top, from raw pixels to its last feature map.

    weights: None (random), 'imagenet' (downloads), or a local file (.weights.h5 saved by
    save_weights, or Keras' own .h5) that must fit this exact network; else a DataError naming both.
    """
    if name not in APPLICATIONS:
        raise ConfigError(f"transfer.source={name!r} is not a known backbone; valid: {', '.join(APPLICATIONS)}")
    builder, mode = APPLICATIONS[name]
    options = {"alpha": alpha} if alpha is not None else {}
    if alpha is not None and name != "MobileNetV2":
        raise ConfigError(f"transfer.alpha={alpha} is only an option of MobileNetV2, not {name}")
    expected = describe(name, input_shape, alpha)
    inputs = keras.Input(input_shape, name="images")
    x = ImagenetPreprocessing(mode, name="preprocess")(inputs)
    try:  # one flat model (input_tensor), so every layer can be frozen or tapped for U-Net skips
        network = builder(include_top=False, weights=None, input_tensor=x, **options)
    except ValueError as err:
        raise ConfigError(f"transfer.source={name}: cannot build {expected}: {err}") from None
    if weights is not None:
        network.set_weights(pretrained(builder, (*input_shape[:2], 3), weights, options, expected).get_weights())
    return keras.Model(inputs, network.output, name=f"{name}_backbone")


HUB_VALID = ("a keras.applications name (" + ", ".join(APPLICATIONS) + "), a KerasHub image backbone preset with a "
             "feature pyramid (resnet_18_imagenet, resnet_50_imagenet, efficientnet_b0_ra_imagenet, "
             "mobilenet_v3_small_100_imagenet: downloaded once) or a local preset folder (config.json, "
             "model.weights.h5: backbone.save_to_preset)")  # fmt: skip


def hub_source(preset: str) -> str:
    """What KerasHub loads for `preset`: the expanded path when a file or folder of that name exists, else the
    name itself (a built-in preset)."""
    folder = Path(preset).expanduser()
    return str(folder) if folder.exists() else preset


def is_hub_preset(preset: str) -> bool:
    """A KerasHub preset: a local preset folder (config.json and metadata.json), or a preset name KerasHub
    knows (when keras-hub is installed)."""
    folder = Path(hub_source(preset))
    if folder.exists():
        return folder.is_dir() and (folder / "config.json").is_file() and (folder / "metadata.json").is_file()
    try:
        import keras_hub
    except ImportError:
        return False
    return preset in keras_hub.models.Backbone.presets


def pyramid_levels(pyramid: keras.Model) -> int:
    """The first level of a pyramid model (hub_pyramid): its first output's stride is 2**level."""
    return (pyramid.inputs[0].shape[1] // pyramid.outputs[0].shape[1]).bit_length() - 1


def refuse_weights_for_preset(backbone: str, weights: str | None) -> None:
    """A KerasHub preset carries its own weights: `model.weights` beside one is one line."""
    if weights is not None:
        raise ConfigError(f"model.weights={weights!r}: the KerasHub preset {backbone!r} carries its own weights; "
                          "valid: model.weights=null")  # fmt: skip


def hub_pyramid(preset: str, input_shape: tuple[int, int, int]) -> keras.Model:
    """A KerasHub image backbone from its preset (a built-in name, downloaded once, or a local preset folder)
    as one keras.Model from raw pixels in [0, 255] to its feature pyramid P<first>..P<last> (strides
    2**first, ...), through the preset's image converter's scale and offset when it has one (`pyramid_levels` gives
    `first`).
    The model is a plain functional graph of the backbone's layers."""
    backbone, levels, scaling = hub_backbone(preset, input_shape, "for a U-Net to take its skips from")
    return pyramid_model(backbone, scaling, input_shape, levels, f"{backbone.name}_pyramid")


def pyramid_model(backbone, scaling, input_shape: tuple[int, int, int], levels: list[int], name: str) -> keras.Model:
    """Raw pixels -> the preset's scaling (when it has one) -> the KerasHub backbone's maps P<level> for `levels`,
    as one keras.Model; the backbone's layers that only deeper levels need are left out."""
    inputs = keras.Input(input_shape, name="images")
    maps = keras.Model(backbone.inputs, [backbone.pyramid_outputs[f"P{level}"] for level in levels], name=backbone.name)
    return keras.Model(inputs, maps(scaling(inputs) if scaling is not None else inputs), name=name)


def hub_backbone(preset: str, input_shape: tuple[int, int, int], use: str, deepest: int | None = None):
    """The KerasHub image backbone of `preset` (a built-in name, downloaded once, or a local preset folder), checked
    to fit the data (`use` says what its feature pyramid is for, in the line a backbone without one gets): the
    backbone, its pyramid's levels (P<level> has stride 2**level), and the Rescaling layer its preset's image
    converter asks for (scale and offset from pixels in [0, 255]), or None when the preset has no converter.
    The image size must be a multiple of the stride of the deepest level the model reads: `deepest`, or the
    pyramid's last."""
    try:
        import keras_hub
    except ImportError:
        raise ConfigError(
            f"model.backbone={preset!r} is not a keras.applications name, and KerasHub presets need keras-hub "
            f"(not installed); valid: {HUB_VALID}, after pip install 'cnn-pipeline[hub]'"
        ) from None
    source = hub_source(preset)
    folder = Path(source)
    try:
        backbone = keras_hub.models.Backbone.from_preset(source)
    except (ValueError, OSError, KeyError) as err:
        if folder.is_dir():
            held = sorted(p.name for p in folder.iterdir())
            found = f"the folder holds {', '.join(held[:8]) + (', ...' if len(held) > 8 else '') or 'nothing'}"
        elif "/" in preset or preset.startswith("."):
            found = "no such folder"
        elif "Unknown preset" in str(err):
            close = difflib.get_close_matches(preset, list(keras_hub.models.Backbone.presets), 3)
            found = "KerasHub has no preset of that name" + (f"; closest: {', '.join(close)}" if close else "")
        else:  # a known name that could not be fetched (no network)
            found = first_line(err)
        raise ConfigError(f"model.backbone={preset!r} is not a backbone preset ({found}); valid: {HUB_VALID}") from None
    pyramid = getattr(backbone, "pyramid_outputs", None) or {}
    levels = sorted(int(key[1:]) for key in pyramid if key[1:].isdigit())
    if not levels or levels != list(range(levels[0], levels[-1] + 1)):
        raise ConfigError(f"model.backbone={preset!r}: {type(backbone).__name__} has no feature pyramid "
                          f"(pyramid_outputs: {sorted(pyramid) or 'none'}) {use}; valid: {HUB_VALID}")  # fmt: skip
    reach = levels[-1] if deepest is None else min(max(deepest, levels[0]), levels[-1])
    stride = 2**reach
    if input_shape[0] % stride or input_shape[1] % stride:
        size = max(stride, input_shape[0] - input_shape[0] % stride)
        reads = "its pyramid reaches" if deepest is None else f"the model reads its level P{reach} at"
        raise ConfigError(f"model.backbone={preset!r}: {reads} stride {stride}, so the image size must "
                          f"be a multiple of {stride}, not {input_shape[0]}x{input_shape[1]}; valid: "
                          f"data.image_size={size}")  # fmt: skip
    channels = backbone.inputs[0].shape[-1]
    if channels is not None and channels != input_shape[-1]:
        raise ConfigError(f"model.backbone={preset!r} takes {channels}-channel images, not the data's "
                          f"{input_shape[-1]}; valid: data.channels={channels}")  # fmt: skip
    try:
        converter = keras_hub.layers.ImageConverter.from_preset(source)
    except (ValueError, OSError, KeyError):
        converter = None
    scale = getattr(converter, "scale", None)
    offset = getattr(converter, "offset", None)
    if scale is None and offset is None:
        log.info("model.backbone=%s: its preset has no image converter; the backbone gets pixels in 0..255", preset)
        return backbone, levels, None
    log.info("model.backbone=%s: pixels x %s + %s, as its preset's image converter says", preset, scale, offset)
    scaling = layers.Rescaling(1.0 if scale is None else scale, 0.0 if offset is None else offset, name="preprocess")
    return backbone, levels, scaling


def set_batch_norm_momentum(encoder: keras.Model, momentum: float | None, name: str) -> None:
    """Give every batch norm layer of `encoder` (nested models included) this momentum of its moving statistics;
    None keeps each layer's own. From random weights a short run needs it: MobileNetV2's 0.999 (set for ImageNet's
    long training) still weighs its starting statistics (mean 0, variance 1) by 0.999**1134 = 0.32 after the
    default job's 1134 steps, so in inference mode the model sees other features than it trained on."""
    if momentum is None:
        return
    if not 0 <= momentum < 1:
        raise ConfigError(f"model.bn_momentum={momentum} is invalid: must be in [0, 1), or null (the network's own)")
    normalizations = [layer for layer in leaves(encoder) if isinstance(layer, layers.BatchNormalization)]
    changed = sorted({layer.momentum for layer in normalizations if layer.momentum != momentum})
    for layer in normalizations:
        layer.momentum = momentum
    if changed:
        log.info("model.bn_momentum=%s: %s's %d batch norm layers move their statistics at %s (its own: %s)",
                 momentum, name, len(normalizations), momentum, ", ".join(map(str, changed)))  # fmt: skip


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__


def pretrained(builder, input_shape: tuple[int, int, int], weights: str, options: dict, expected: str) -> keras.Model:
    """The plain network (as a user saves it) with `weights` loaded, checked against its architecture."""
    if weights == "imagenet":
        try:
            return builder(include_top=False, weights="imagenet", input_shape=input_shape, **options)
        except (ValueError, OSError) as err:  # unsupported size or alpha, or no network
            raise ConfigError(f"transfer.weights=imagenet for {expected}: {err}") from None
    path = Path(weights)
    if not path.is_file():
        raise DataError(
            f"transfer.weights={weights}: file not found; expected weights of {expected} "
            "(a .weights.h5 written by model.save_weights, or 'imagenet')"
        )
    network = builder(include_top=False, weights=None, input_shape=input_shape, **options)
    try:
        with warnings.catch_warnings():  # Keras warns once per unmatched layer before it raises
            warnings.simplefilter("ignore")
            network.load_weights(path)
    except (ValueError, OSError, KeyError) as err:
        first = str(err).strip().splitlines()[0]
        raise DataError(f"transfer.weights={weights}: does not fit {expected} ({first})") from None
    return network


def block_of(layer_name: str) -> str:
    return BLOCK.match(layer_name).group(0)


def leaves(model: keras.Model):
    """The model's layers in order, those of a nested model (a KerasHub backbone's graph inside its pyramid)
    in its place."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from leaves(layer)
        else:
            yield layer


def blocks(model: keras.Model) -> dict[str, list[keras.layers.Layer]]:
    """The layers with weights, normalization aside, grouped into blocks, from the input to the output."""
    grouped = {}
    for layer in leaves(model):
        if layer.weights and not isinstance(layer, NORMALIZATION):
            grouped.setdefault(block_of(layer.name), []).append(layer)
    return grouped


def set_trainable(backbone: keras.Model, top_blocks: int | None) -> list[str]:
    """Freeze the backbone except its top `top_blocks` blocks (None: all of them); returns their names.

    Normalization layers stay frozen unless everything trains: fine-tuning on a small set would
    otherwise move their statistics (they are also called in inference mode, training=False).
    """
    grouped = list(blocks(backbone))
    if top_blocks is None:
        names = grouped
    else:
        names = grouped[len(grouped) - top_blocks :] if top_blocks > 0 else []
    backbone.trainable = True  # and every nested model's
    for layer in leaves(backbone):
        if isinstance(layer, NORMALIZATION):
            layer.trainable = top_blocks is None
        elif layer.weights:
            layer.trainable = block_of(layer.name) in names
    return names


def skip_layers(encoder: keras.Model) -> list[str]:
    """For each stride 2, 4, ... below the encoder's output: the last layer whose map has that resolution."""
    size = encoder.inputs[0].shape[1]
    last_at = {}
    for layer in encoder.layers[1:]:
        shape = layer.output.shape
        if len(shape) == 4 and shape[1] and size % shape[1] == 0:
            last_at[size // shape[1]] = layer.name
    out_stride = size // encoder.output.shape[1]
    strides = [2**i for i in range(1, out_stride.bit_length() - 1)]
    missing = [s for s in strides if s not in last_at]
    if out_stride < 2 or out_stride & (out_stride - 1) or missing:
        raise ConfigError(
            f"encoder {encoder.name} cannot feed a U-Net: its output stride is {out_stride} and it has no map at "
            f"strides {missing}; needs maps at every power-of-2 stride (same-padded convs and 2x2 poolings)"
        )
    return [last_at[s] for s in strides]


def transfer_classifier(
    backbone: keras.Model, num_classes: int, backbone_training: bool | None = False, dropout: float = 0.0
) -> keras.Model:
    """backbone -> [global average pooling of a feature map] -> [dropout] -> a new softmax head.

    backbone_training=False runs the backbone in inference mode whatever is trainable (batch norm
    keeps its source statistics); None lets it train normally (from scratch).
    """
    if num_classes < 2:
        raise ConfigError(f"num_classes={num_classes} is invalid: classification needs >= 2 classes")
    inputs = keras.Input(backbone.inputs[0].shape[1:], name="images")
    x = backbone(inputs, training=backbone_training)
    if len(x.shape) == 4:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if dropout:
        x = layers.Dropout(dropout, name="head_dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32", name="predictions")(x)
    return keras.Model(inputs, outputs, name=f"{backbone.name}_transfer")
