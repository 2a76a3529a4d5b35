"""Visualize stage: what a trained CNN learned, as pictures in an MLflow run nested under the source run.

    python -m pipeline.visualize source=<run id>                  # the run's model, on its own test images
    python -m pipeline.visualize source=model.keras data=digits image=my_digit.png
Logs plots/filters/ (first-layer kernels beside Sobel and Gabor banks, deeper layers' filter norms),
plots/activations/ (every conv and pooling layer's feature maps), plots/saliency.png, plots/gradcam.png,
plots/occlusion.png, plots/maximization/ (synthesized inputs per layer and per class) and plots/deconv/
(guided backpropagation of each layer's strongest units).
"""

import logging
import shutil
import tempfile
from pathlib import Path

import hydra
import keras
import numpy as np
from omegaconf import DictConfig, OmegaConf

from pipeline import features, tracking, viz
from pipeline.config import conf_dir, positive_int, require, stage
from pipeline.errors import ConfigError, DataError
from pipeline.kernels import gabor_bank, sobel_bank
from pipeline.prepare import class_names, load_data, prepare_data

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


def pick_inputs(cfg: DictConfig, data: DictConfig, shape: tuple[int, int, int]):
    """The images to explain and their targets (labels or masks; None for a picture file)."""
    if cfg.image:
        return read_image(str(cfg.image), shape)[None], None
    if cfg.split not in ("train", "val", "test"):
        raise ConfigError(f"split={cfg.split!r} is invalid; valid: train, val, test")
    images, targets = load_data(data, prepare_data(data, progress=False), cfg.split)
    if images.shape[1:] != shape:
        raise ConfigError(f"data.image_size gives {images.shape[1:]} images but the model expects {shape}")
    if targets.ndim == 1:  # classifier: the first image of each class, then the rest in order
        _, first = np.unique(targets, return_index=True)
        order = np.concatenate([np.sort(first), np.setdiff1d(np.arange(len(targets)), first)])
    else:
        order = np.arange(len(images))
    picked = order[: cfg.num_images]
    return images[picked].astype(np.float32), targets[picked]


def chosen_layers(model: keras.Model, names, count: int) -> list[str]:
    convs = [layer.name for layer in features.conv_layers(model) if layer is not model.layers[-1]]
    if names is None:  # (a segmentation model's output conv gives class scores, not features)
        return [features.activated(model, name) for name in features.evenly_spaced(convs, count)]
    unknown = [name for name in names if name not in {layer.name for layer in model.layers}]
    if unknown:
        raise ConfigError(f"layers {unknown} are not in model {model.name}; its conv layers: {', '.join(convs)}")
    return list(names)


def filter_figures(model: keras.Model) -> dict[str, "viz.plt.Figure"]:
    with_kernels = [layer for layer in features.conv_layers(model) if hasattr(layer, "kernel")]
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


def attribution_figures(model, images, targets, task: str, classes: list[str], cfg: DictConfig, layer: str):
    """Saliency, Grad-CAM and occlusion maps: of the true (else predicted) class, per class for segmentation."""
    probabilities = model.predict(images, verbose=0)
    predicted = probabilities.argmax(axis=-1)
    if task == "classification":
        labels = predicted if targets is None else targets
        names = ["predicted class" if targets is None else "true class"]
        weights = [features.target_weights(probabilities.shape, labels)]
        rows = [f"true {classes[t]}, predicted {classes[p]}" for t, p in zip(labels, predicted)]
        if targets is None:
            rows = [f"predicted {classes[p]}" for p in predicted]
    else:  # per class, over its true (else predicted) region
        masks = predicted if targets is None else targets
        explained = [c for c, name in enumerate(classes) if name != "background"]
        names = [classes[c] for c in explained]
        weights = [features.target_weights(probabilities.shape, np.full(len(images), c), masks) for c in explained]
        # a class absent from an image is scored over the whole image ("why not this class anywhere")
        rows = [", ".join(classes[c] for c in explained if (mask == c).any()) or "background" for mask in masks]
    size = images.shape[1]
    patch = cfg.occlusion.patch or max(2, size // 4)
    stride = cfg.occlusion.stride or max(1, patch // 2)
    saliency = [features.saliency(model, images, w) for w in weights]
    cams = [features.grad_cam(model, layer, images, w) for w in weights]
    drops = [
        np.stack([features.occlusion(model, x, w[k], patch, stride) for k, x in enumerate(images)]) for w in weights
    ]
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


def maximization_figures(model, layers: list[str], classes: list[str], mcfg: DictConfig, folder: Path):
    """Synthesized inputs for the first filters of each layer and for each class, saved; returns the gains
    (mean activation at the end over mean activation at the random start) per layer."""
    shape = tuple(model.inputs[0].shape[1:])
    options = {k: mcfg[k] for k in ("steps", "step_size", "jitter", "blur_every", "decay")}
    gains = {}
    for k, name in enumerate(layers):
        count = min(mcfg.filters, features.layer_output(model.get_layer(name)).shape[-1])
        objective = features.filter_objective(model, name, list(range(count)))
        synthesized, start, end = features.maximize(objective, shape, count, **options)
        gains[name] = float(np.mean(end) / max(abs(float(np.mean(start))), 1e-12))
        titles = [f"{c}: {end[c]:.2g}" for c in range(count)]
        figure = viz.synthesized_grid(synthesized, titles, f"{name}: inputs maximising each filter's mean activation")
        save({f"maximization/{k:02d}_{name}.png": figure}, folder)
    with features.logits(model):
        synthesized, _, end = features.maximize(
            features.class_objective(model, list(range(len(classes)))), shape, len(classes), **options
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
        channels, projections = features.guided_backprop(model, name, image, top)
        pictures = np.concatenate([image[None], projections])
        titles = ["input"] + [f"map {c}" for c in channels]
        figures[f"deconv/{k:02d}_{name}.png"] = viz.synthesized_grid(
            pictures, titles, f"{name}: strongest units projected to the pixels (guided backprop)", columns=top + 1
        )
    return figures


def in_float32(model: keras.Model) -> keras.Model:
    """The same model computing in float32: gradients with respect to the input (saliency, Grad-CAM, activation
    maximization) need it, and a mixed-precision model (trainer.precision=auto on a bfloat16 CPU) is not."""
    if all(layer.dtype_policy.compute_dtype == "float32" for layer in model.layers):
        return model

    def float32_layer(layer):
        return layer.__class__.from_config({**layer.get_config(), "dtype": "float32"})

    clone = keras.models.clone_model(model, clone_function=float32_layer)
    clone.set_weights(model.get_weights())  # mixed precision keeps its variables in float32 already
    return clone


@hydra.main(version_base="1.3", config_path=conf_dir(), config_name="visualize")
@stage
def main(cfg: DictConfig) -> float:
    for key in ("num_images", "max_channels", "maximization.max_layers", "maximization.filters", "maximization.steps"):
        require(cfg, key, positive_int, "a positive integer")
    for key in ("deconv.top", "deconv.max_layers"):
        require(cfg, key, positive_int, "a positive integer")
    for key in ("occlusion.patch", "occlusion.stride"):
        require(cfg, key, lambda v: v is None or positive_int(v), "null or a positive integer")
    model, source_run = tracking.load_model(str(cfg.source), cfg.tracking.uri)
    model = in_float32(model)
    data = cfg.data
    if source_run and (source := tracking.load_run_config(source_run)):
        data = OmegaConf.create(source["data"])  # explain the model on what it was trained on
    if not features.conv_layers(model):
        raise ConfigError(f"model {model.name} has no conv layers: there are no filters or feature maps to picture")
    task = data.get("task", "segmentation")
    if task not in ("classification", "segmentation"):
        raise ConfigError(f"data.task={task!r} cannot be visualized; valid: classification, segmentation")
    classes = class_names(data, Path(str(data.get("root", "."))))
    shape = tuple(model.inputs[0].shape[1:])
    images, targets = pick_inputs(cfg, data, shape)
    layer = cfg.layer or features.last_conv_layer(model)
    if layer not in {item.name for item in model.layers}:
        raise ConfigError(f"layer={layer!r} is not in model {model.name}; e.g. {features.last_conv_layer(model)}")

    with tempfile.TemporaryDirectory(prefix="visualize-") as name:
        folder = Path(name)
        save(filter_figures(model), folder)
        maps = features.activation_maps(model, [item.name for item in features.spatial_layers(model)], images)
        for k, (name, values) in enumerate(maps.items()):
            save({f"activations/{k:02d}_{name}.png": viz.feature_maps(images, values, name, cfg.max_channels)}, folder)
        save(attribution_figures(model, images, targets, task, classes, cfg, layer), folder)
        maximized = chosen_layers(model, cfg.maximization.layers, cfg.maximization.max_layers)
        gains = maximization_figures(model, maximized, classes, cfg.maximization, folder)
        deconv = chosen_layers(model, cfg.deconv.layers, cfg.deconv.max_layers)
        save(deconv_figures(model, deconv, images[0], cfg.deconv.top), folder)

        tags = {"stage": "visualize", "source": str(cfg.source), "source_run": source_run or "", "data": data.name}
        with tracking.run(
            cfg.tracking.uri,
            cfg.tracking.experiment,
            cfg.tracking.run_name,
            cfg.tracking.artifact_root,
            tags,
            source_run,
        ):
            tracking.log_params(
                {"source": cfg.source, "source_run": source_run, "image": cfg.image, "split": cfg.split, "layer": layer}
            )
            tracking.log_params({"maximization": OmegaConf.to_container(cfg.maximization), "deconv_layers": deconv})
            tracking.log_metrics({f"maximization_gain_{name}": gain for name, gain in gains.items()})
            tracking.log_dir(folder, "plots")
        if cfg.export_dir:
            shutil.copytree(folder, Path(cfg.export_dir), dirs_exist_ok=True)
        count = len(list(folder.rglob("*.png")))
    gain = float(np.mean(list(gains.values())))
    log.info("%d pictures logged; activation maximization raised the filters %.1fx on average", count, gain)
    return gain


if __name__ == "__main__":
    main()
