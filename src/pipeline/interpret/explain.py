"""What a trained CNN learned, as pictures: the library behind `cnn visualize`. It draws
plots/filters/ (first-layer kernels beside Sobel and Gabor banks, deeper layers' filter norms),
plots/activations/ (every conv and pooling layer's feature maps), plots/saliency.png, plots/gradcam.png,
plots/occlusion.png, plots/maximization/ (synthesized inputs per layer and per class) and plots/deconv/
(guided backpropagation of each layer's strongest units).
"""

import logging
from pathlib import Path

import keras
import numpy as np

from pipeline.config.spec import Spec
from pipeline.data.sources import load_data, prepare_data
from pipeline.errors import ConfigError, DataError
from pipeline.interpret import probes
from pipeline.lecture.kernels import gabor_bank, sobel_bank
from pipeline.plots import viz
from pipeline.tasks import Task

log = logging.getLogger(__name__)


def read_image(path: str, shape: tuple[int, int, int]) -> np.ndarray:
    """A picture file as the model's input: resized to its height x width, grey or RGB as it expects."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as picture:
            picture = picture.convert("L" if shape[2] == 1 else "RGB").resize((shape[1], shape[0]))
    except (FileNotFoundError, UnidentifiedImageError) as err:
        raise DataError(f"image={path}: not a readable picture ({err})") from None
    return np.asarray(picture, np.float32).reshape(shape)


def pick_inputs(image: str | None, split: str, count: int, data: Spec, shape: tuple[int, int, int]):
    """The images to explain and their targets (labels or masks; None for a picture file)."""
    if image:
        return read_image(str(image), shape)[None], None
    images, targets = load_data(data, prepare_data(data, progress=False), split)
    if images.shape[1:] != shape:
        raise ConfigError(f"data.image_size gives {images.shape[1:]} images but the model expects {shape}")
    if targets.ndim == 1:  # classifier: the first image of each class, then the rest in order
        _, first = np.unique(targets, return_index=True)
        order = np.concatenate([np.sort(first), np.setdiff1d(np.arange(len(targets)), first)])
    else:
        order = np.arange(len(images))
    picked = order[:count]
    return images[picked].astype(np.float32), targets[picked]


def chosen_layers(model: keras.Model, names, count: int) -> list[str]:
    convs = [layer.name for layer in probes.conv_layers(model) if layer is not model.layers[-1]]
    if names is None:  # (a segmentation model's output conv gives class scores, not features)
        return [probes.activated(model, name) for name in probes.evenly_spaced(convs, count)]
    unknown = [name for name in names if name not in {layer.name for layer in model.layers}]
    if unknown:
        raise ConfigError(f"layers {unknown} are not in model {model.name}; its conv layers: {', '.join(convs)}")
    return list(names)


def filter_figures(model: keras.Model) -> dict[str, "viz.plt.Figure"]:
    with_kernels = [layer for layer in probes.conv_layers(model) if hasattr(layer, "kernel")]
    first = with_kernels[0]
    kernels = keras.ops.convert_to_numpy(first.kernel)
    figures = {
        "filters/first_layer.png": viz.kernel_banks(
            {f"{first.name} (learned)": kernels, "Sobel x, y": sobel_bank(), "Gabor": gabor_bank(size=kernels.shape[0])}
        )
    }
    norms = {
        layer.name: np.sqrt((keras.ops.convert_to_numpy(layer.kernel) ** 2).reshape(-1, layer.kernel.shape[-1]).sum(0))
        for layer in with_kernels
    }
    figures["filters/kernel_norms.png"] = viz.kernel_norms(norms)
    if len(with_kernels) > 1:
        second = with_kernels[1]
        figures[f"filters/{second.name}_kernels.png"] = viz.kernel_grid(
            keras.ops.convert_to_numpy(second.kernel)[..., :32], f"{second.name} kernels (mean over input channels)"
        )
    return figures


def attribution_figures(
    model, images, targets, task: Task, classes: list[str], layer: str, patch: int | None, stride: int | None
):
    """Saliency, Grad-CAM and occlusion maps of what the task explains: the true (else predicted) class of a
    classifier, each class over its region for segmentation. patch/stride: the occlusion square (None: a
    quarter of the image side, and half the patch)."""
    probabilities = model.predict(images, verbose=0)
    names, weights, rows = task.explain(probabilities, targets, classes)
    size = images.shape[1]
    patch = patch or max(2, size // 4)
    stride = stride or max(1, patch // 2)
    saliency = [probes.saliency(model, images, w) for w in weights]
    cams = [probes.grad_cam(model, layer, images, w) for w in weights]
    drops = [np.stack([probes.occlusion(model, x, w[k], patch, stride) for k, x in enumerate(images)]) for w in weights]
    return {
        "saliency.png": viz.heatmaps(images, saliency, names, rows, "saliency |d score / d input|"),
        "gradcam.png": viz.heatmaps(images, cams, names, rows, f"Grad-CAM on {layer}"),
        "occlusion.png": viz.heatmaps(
            images, drops, names, rows, f"occlusion: drop of the probability, {patch}px grey patch", cmap="RdBu_r"
        ),
    }


def save(figures: dict[str, "viz.plt.Figure"], folder: Path) -> None:
    """Write the figures as PNGs under folder (and free them: a U-Net makes dozens)."""
    for name, figure in figures.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=100)
        viz.plt.close(figure)


def maximization_figures(model, layers: list[str], classes: list[str], mcfg: Spec, folder: Path):
    """Synthesized inputs for the first filters of each layer and for each class, saved; returns the gains
    (mean activation at the end over mean activation at the random start) per layer."""
    shape = tuple(model.inputs[0].shape[1:])
    options = {k: mcfg[k] for k in ("steps", "step_size", "jitter", "blur_every", "decay")}
    gains = {}
    for k, name in enumerate(layers):
        count = min(mcfg.filters, probes.layer_output(model.get_layer(name)).shape[-1])
        objective = probes.filter_objective(model, name, list(range(count)))
        synthesized, start, end = probes.maximize(objective, shape, count, **options)
        gains[name] = float(np.mean(end) / max(abs(float(np.mean(start))), 1e-12))
        titles = [f"{c}: {end[c]:.2g}" for c in range(count)]
        figure = viz.synthesized_grid(synthesized, titles, f"{name}: inputs maximising each filter's mean activation")
        save({f"maximization/{k:02d}_{name}.png": figure}, folder)
    with probes.logits(model):
        synthesized, _, end = probes.maximize(
            probes.class_objective(model, list(range(len(classes)))), shape, len(classes), **options
        )
    titles = [f"{c}: {v:.2g}" for c, v in zip(classes, end)]
    save(
        {"maximization/classes.png": viz.synthesized_grid(synthesized, titles, "inputs maximising each class's logit")},
        folder,
    )
    return gains


def deconv_figures(model, layers: list[str], image: np.ndarray, top: int):
    figures = {}
    for k, name in enumerate(layers):
        channels, projections = probes.guided_backprop(model, name, image, top)
        pictures = np.concatenate([image[None], projections])
        titles = ["input"] + [f"map {c}" for c in channels]
        figures[f"deconv/{k:02d}_{name}.png"] = viz.synthesized_grid(
            pictures, titles, f"{name}: strongest units projected to the pixels (guided backprop)", columns=top + 1
        )
    return figures
