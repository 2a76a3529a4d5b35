"""What a trained CNN learned: activation maps, occlusion, saliency, Grad-CAM, activation maximization, guided backprop.

Plain arguments, keras.ops maths; gradients come from pipeline.interpret.gradients (the one backend-specific place).
Images are raw pixels (N, H, W, C) in [0, 255], as the models take them. A "target" says which score to
explain: `weights` with the model output's shape; the score is sum(output · weights) per image, so a
one-hot (N, K) row picks a class of a classifier and a (N, H, W, K) mask picks a class's region of a
segmentation model.
"""

import contextlib
from collections.abc import Iterator

import keras
import numpy as np
from keras import layers, ops

from pipeline.errors import ConfigError
from pipeline.interpret.gradients import guided, input_gradient
from pipeline.models import model_input
from pipeline.models.layers import FixedKernelConv2D, MaxPoolingWithSwitches2D

CONV_TYPES = (layers.Conv2D, layers.Conv2DTranspose, layers.DepthwiseConv2D, layers.SeparableConv2D, FixedKernelConv2D)
POOL_TYPES = (layers.MaxPooling2D, layers.AveragePooling2D, MaxPoolingWithSwitches2D)
GREY = 127.5  # the occluder and the starting point of activation maximization, mid-way in [0, 255]


def layer_output(layer: keras.layers.Layer):
    out = layer.output
    return out[0] if isinstance(out, (list, tuple)) else out  # pooling with switches: the pooled values


def conv_layers(model: keras.Model) -> list[keras.layers.Layer]:
    return [layer for layer in model.layers if isinstance(layer, CONV_TYPES)]


def spatial_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """Conv and pooling layers, in order: the hierarchy the activation maps show."""
    return [layer for layer in model.layers if isinstance(layer, CONV_TYPES + POOL_TYPES)]


def last_conv_layer(model: keras.Model) -> str:
    """Grad-CAM's default layer: the last conv (or its activation) with a spatial map, before the output layer."""
    for layer in reversed(model.layers[:-1]):
        shape = layer_output(layer).shape
        spatial = len(shape) == 4 and (shape[1] or 2) * (shape[2] or 2) > 1
        if spatial and isinstance(layer, CONV_TYPES + (layers.Activation, layers.ReLU)):
            return layer.name
    raise ConfigError(f"model {model.name} has no conv layer with a spatial output: nothing for Grad-CAM to map")


def activated(model: keras.Model, name: str) -> str:
    """The conv's output after the batch norm and activation that directly follow it (a CONV-BN-RELU
    block's unit), else the layer itself: what a unit "responds" to is its activation, not its raw sum."""
    index = [layer.name for layer in model.layers].index(name)
    following = (layers.BatchNormalization, layers.Activation, layers.ReLU)
    while index + 1 < len(model.layers) - 1:
        after = model.layers[index + 1]
        if not (isinstance(after, following) and after.input is layer_output(model.layers[index])):
            break
        index += 1
    return model.layers[index].name


def evenly_spaced(items: list, count: int) -> list:
    """`count` items spread from the first to the last (all when there are fewer)."""
    if len(items) <= count:
        return list(items)
    return [items[i] for i in np.linspace(0, len(items) - 1, count).round().astype(int)]


def feature_model(model: keras.Model, names: list[str]) -> keras.Model:
    """A model from the inputs to the outputs of the named layers (shares the layers and their weights)."""
    return keras.Model(model_input(model), [layer_output(model.get_layer(name)) for name in names])


def activation_maps(model: keras.Model, names: list[str], images: np.ndarray) -> dict[str, np.ndarray]:
    """Each named layer's feature maps (N, h, w, C) for the images."""
    outputs = feature_model(model, names)(np.asarray(images, np.float32), training=False)
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    return {name: ops.convert_to_numpy(out) for name, out in zip(names, outputs)}


@contextlib.contextmanager
def _swapped_activations(model: keras.Model, swap) -> Iterator[None]:
    """Temporarily replace `layer.activation` by swap(activation) (None: keep) for every layer that has one."""
    saved = {}
    for layer in model.layers:
        activation = getattr(layer, "activation", None)
        if activation is not None and (new := swap(layer, activation)) is not None:
            saved[layer] = activation
            layer.activation = new
    try:
        yield
    finally:
        for layer, activation in saved.items():
            layer.activation = activation


def logits(model: keras.Model):
    """While active, the output layer's softmax is the identity: scores are logits, which do not saturate."""
    output_layer = model.layers[-1]
    return _swapped_activations(
        model,
        lambda layer, act: (
            keras.activations.linear if layer is output_layer and act is keras.activations.softmax else None
        ),
    )


def guided_activations(model: keras.Model):
    """While active, every hidden activation backpropagates only positive gradients (guided backprop)."""
    output_layer = model.layers[-1]
    skip = (keras.activations.linear, keras.activations.softmax)
    return _swapped_activations(
        model, lambda layer, act: guided(act) if layer is not output_layer and act not in skip else None
    )


class _Tap:
    """Adds `delta` to a layer's output: the gradient with respect to delta at 0 is d score / d activation."""

    def __init__(self, layer: keras.layers.Layer):
        self.layer, self.delta, self.original = layer, 0.0, layer.call

    def __enter__(self):
        def call(*args, **kwargs):
            out = self.original(*args, **kwargs)
            if isinstance(out, (list, tuple)):
                return [out[0] + self.delta, *out[1:]]
            return out + self.delta

        self.layer.call = call
        return self

    def __exit__(self, *exc):
        del self.layer.call  # back to the class's method


def score(outputs, weights):
    """Per-image score: sum over everything but the batch of outputs · weights."""
    product = outputs * ops.convert_to_tensor(weights, outputs.dtype)
    return ops.sum(ops.reshape(product, (ops.shape(product)[0], -1)), axis=1)


def saliency(model: keras.Model, images: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """|d score / d input|, the maximum over colour channels (Simonyan et al. 2014): (N, H, W)."""
    with logits(model):
        _, grad = input_gradient(lambda x: score(model(x, training=False), weights), images)
    return ops.convert_to_numpy(ops.max(ops.abs(grad), axis=-1))


def grad_cam(model: keras.Model, layer_name: str, images: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Grad-CAM (Selvaraju et al. 2017): relu(Σ_k α_k A_k) with α_k the mean gradient of the score over map k.

    Upsampled bilinearly to the input size and scaled to [0, 1] per image: (N, H, W).
    """
    layer = model.get_layer(layer_name)
    images = np.asarray(images, np.float32)
    [maps] = activation_maps(model, [layer_name], images).values()
    with logits(model), _Tap(layer) as tap:

        def scored(delta):
            tap.delta = delta
            return score(model(images, training=False), weights)

        _, grad = input_gradient(scored, np.zeros_like(maps))
    alpha = ops.mean(grad, axis=(1, 2), keepdims=True)
    cam = ops.relu(ops.sum(alpha * ops.convert_to_tensor(maps), axis=-1, keepdims=True))
    cam = ops.image.resize(cam, images.shape[1:3], interpolation="bilinear")[..., 0]
    peak = ops.max(cam, axis=(1, 2), keepdims=True)
    return ops.convert_to_numpy(ops.where(peak > 0, cam / ops.maximum(peak, 1e-12), 0.0))


def occlusion(
    model: keras.Model,
    image: np.ndarray,
    weights: np.ndarray,
    patch: int = 8,
    stride: int = 4,
    fill: float = GREY,
    batch_size: int = 64,
) -> np.ndarray:
    """Occlusion sensitivity (Zeiler & Fergus 2013): how much the target's probability drops when a grey
    patch hides each place, averaged over the patches that cover each pixel: (H, W).

    The score is the target's probability mass, sum(p · w) / sum(w): the true class's probability for a
    classifier, the mean probability of a class over its region for a segmentation model.
    """
    height, width = image.shape[:2]
    patch = min(patch, height, width)
    rows = sorted(set(range(0, height - patch + 1, stride)) | {height - patch})
    columns = sorted(set(range(0, width - patch + 1, stride)) | {width - patch})
    corners = [(i, j) for i in rows for j in columns]
    occluded = np.repeat(np.asarray(image, np.float32)[None], len(corners) + 1, axis=0)  # the last one stays whole
    for k, (i, j) in enumerate(corners):
        occluded[k, i : i + patch, j : j + patch] = fill
    # eager calls, not model.predict: one image after another would retrace predict's tf.function
    probabilities = np.concatenate(
        [
            ops.convert_to_numpy(model(occluded[k : k + batch_size], training=False))
            for k in range(0, len(occluded), batch_size)
        ]
    )
    scores = ops.convert_to_numpy(score(probabilities, weights[None])) / max(float(np.sum(weights)), 1e-12)
    drop, covered = np.zeros((height, width)), np.zeros((height, width))
    for (i, j), value in zip(corners, scores[:-1]):
        drop[i : i + patch, j : j + patch] += scores[-1] - value
        covered[i : i + patch, j : j + patch] += 1
    return drop / covered


def _blur(x, sigma: float = 0.5):
    """A 3x3 Gaussian blur of each channel around grey (so the zero padding does not darken the border)."""
    taps = np.exp(-(np.array([-1.0, 0.0, 1.0]) ** 2) / (2 * sigma**2))
    kernel = np.outer(taps, taps) / np.outer(taps, taps).sum()
    kernel = np.tile(kernel[:, :, None, None], (1, 1, x.shape[-1], 1)).astype("float32")
    return ops.depthwise_conv(x - GREY, kernel, padding="same") + GREY


def maximize(
    objective,
    shape: tuple[int, int, int],
    count: int,
    steps: int = 64,
    step_size: float = 4.0,
    jitter: int = 2,
    blur_every: int = 4,
    decay: float = 0.002,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Activation maximization by gradient ascent on `count` inputs, objective(x) -> (count,) values to raise.

    Regularised as in Yosinski et al. 2015: a random jitter (roll) before each step, a small Gaussian blur
    every `blur_every` steps, and an L2 decay of the image towards grey. Steps are normalised gradients
    (step_size pixel levels per unit of gradient std). Returns the images and the objective at the random
    start and at the end.
    """
    rng = np.random.default_rng(seed)
    x = ops.convert_to_tensor(GREY + rng.normal(0.0, 8.0, (count, *shape)), "float32")
    start = ops.convert_to_numpy(objective(x))
    for step in range(steps):
        shift = tuple(int(s) for s in rng.integers(-jitter, jitter + 1, 2)) if jitter else (0, 0)
        _, grad = input_gradient(objective, ops.roll(x, shift, axis=(1, 2)))
        grad = ops.roll(grad, (-shift[0], -shift[1]), axis=(1, 2))
        grad = grad / (ops.std(grad, axis=(1, 2, 3), keepdims=True) + 1e-8)
        x = GREY + (x + step_size * grad - GREY) * (1.0 - decay)
        if blur_every and (step + 1) % blur_every == 0:
            x = _blur(x)
        x = ops.clip(x, 0.0, 255.0)
    return ops.convert_to_numpy(x), start, ops.convert_to_numpy(objective(x))


def filter_objective(model: keras.Model, layer_name: str, filters: list[int]):
    """objective(x)[b] = mean activation of filter filters[b] of the layer, on image b."""
    features = feature_model(model, [layer_name])
    pick = np.eye(layer_output(model.get_layer(layer_name)).shape[-1], dtype="float32")[filters]

    def objective(x):
        maps = features(x, training=False)
        return ops.sum(ops.mean(maps, axis=(1, 2)) * pick, axis=-1)

    return objective


def class_objective(model: keras.Model, classes: list[int]):
    """objective(x)[b] = logit of class classes[b] (averaged over the pixels of a segmentation output).

    Call it inside `with logits(model):`.
    """
    num_classes = model.outputs[0].shape[-1]
    pick = np.eye(num_classes, dtype="float32")[classes]

    def objective(x):
        out = model(x, training=False)
        if len(out.shape) == 4:
            out = ops.mean(out, axis=(1, 2))
        return ops.sum(out * pick, axis=-1)

    return objective


def guided_backprop(model: keras.Model, layer_name: str, image: np.ndarray, top: int = 6):
    """Project the strongest unit of each of the layer's `top` most active maps back to the pixels.

    Guided backpropagation (Springenberg et al. 2015), the deconvnet view of Zeiler & Fergus with ReLU's
    backward pass guided. Returns the channel indices and their projections (top, H, W, C).
    """
    image = np.asarray(image, np.float32)[None]
    [maps] = activation_maps(model, [layer_name], image).values()
    maps = maps[0]
    channels = np.argsort(maps.reshape(-1, maps.shape[-1]).max(axis=0))[::-1][:top]
    pick = np.zeros((len(channels), *maps.shape), np.float32)
    for k, channel in enumerate(channels):
        row, column = np.unravel_index(np.argmax(maps[..., channel]), maps.shape[:2])
        pick[k, row, column, channel] = 1.0
    features = feature_model(model, [layer_name])
    with guided_activations(model):
        _, grad = input_gradient(lambda x: score(features(x, training=False), pick), np.repeat(image, len(pick), 0))
    return channels, ops.convert_to_numpy(grad)


def target_weights(outputs_shape: tuple, classes: np.ndarray, masks: np.ndarray | None = None) -> np.ndarray:
    """One-hot score weights: (N, K) for classifiers (classes: (N,)); for segmentation (N, H, W, K) over each
    image's region of its class (masks (N, H, W) of class ids; a class absent from an image: the whole image)."""
    num_classes = outputs_shape[-1]
    onehot = np.eye(num_classes, dtype=np.float32)[np.asarray(classes)]
    if masks is None:
        return onehot
    region = (np.asarray(masks) == np.asarray(classes)[:, None, None]).astype(np.float32)
    empty = region.reshape(len(region), -1).sum(axis=1) == 0
    region[empty] = 1.0
    return region[..., None] * onehot[:, None, None, :]
