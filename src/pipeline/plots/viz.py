"""Pictures: training curves, predictions beside ground truth, confusion matrices."""

import matplotlib

matplotlib.use("Agg")  # headless: figures are written to files and MLflow, never shown

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.ticker import NullFormatter

CLASS_COLOURS = ["#000000", "#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6", "#bcf60c"]


def class_colormap(num_classes: int) -> ListedColormap:
    return ListedColormap([CLASS_COLOURS[i % len(CLASS_COLOURS)] for i in range(num_classes)])


def training_curves(history: dict[str, list[float]]) -> plt.Figure:
    """One panel per metric (loss, mean_iou, ...) with its train and validation curves against epoch."""
    names = [k for k in history if not k.startswith("val_") and k not in ("learning_rate", "images_per_sec")]
    fig, axes = plt.subplots(1, len(names), figsize=(4.5 * len(names), 3.5), squeeze=False)
    for ax, name in zip(axes[0], names):
        epochs = np.arange(1, len(history[name]) + 1)
        ax.plot(epochs, history[name], marker="o", label="train")
        if f"val_{name}" in history:
            ax.plot(epochs, history[f"val_{name}"], marker="o", label="validation")
        ax.set(title=name, xlabel="epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return fig


def prediction_grid(images: np.ndarray, truth: np.ndarray, predicted: np.ndarray, class_names: list[str]) -> plt.Figure:
    """Rows of image | ground truth | prediction | errors (white where the prediction is wrong)."""
    cmap, n = class_colormap(len(class_names)), len(images)
    fig, axes = plt.subplots(n, 4, figsize=(10, 2.5 * n), squeeze=False)
    for row, (image, t, p) in enumerate(zip(images, truth, predicted)):
        panels = [
            (image, None, "image"),
            (t, cmap, "ground truth"),
            (p, cmap, "prediction"),
            (t != p, "gray", "errors"),
        ]
        for ax, (data, colours, title) in zip(axes[row], panels):
            kwargs = {"cmap": colours, "interpolation": "nearest"}
            if colours is cmap:
                kwargs.update(vmin=0, vmax=len(class_names) - 1)
            ax.imshow(data.astype(np.uint8) if data.ndim == 3 else data, **kwargs)
            ax.set_axis_off()
            if row == 0:
                ax.set_title(title)
    handles = [plt.Rectangle((0, 0), 1, 1, color=cmap(i)) for i in range(len(class_names))]
    fig.legend(handles, class_names, loc="lower center", ncol=len(class_names), frameon=False)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig


def confusion_matrix_figure(cm: np.ndarray, class_names: list[str]) -> plt.Figure:
    """Row-normalised confusion matrix (recall per true class) with the raw counts in each cell."""
    cm = np.asarray(cm)
    normalised = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    size = 1.2 + 0.9 * len(class_names)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    im = ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    ax.set(
        xticks=range(len(class_names)),
        yticks=range(len(class_names)),
        xlabel="predicted",
        ylabel="true",
        xticklabels=class_names,
        yticklabels=class_names,
        title="confusion matrix (row-normalised)",
    )
    plt.setp(ax.get_xticklabels(), rotation=45, ha="right")
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(
                j,
                i,
                f"{normalised[i, j]:.2f}\n{cm[i, j]:,}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if normalised[i, j] > 0.5 else "black",
            )
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig


def kernel_grid(kernels: np.ndarray, title: str, names: list[str] | None = None, columns: int = 8) -> plt.Figure:
    """Filters (F, F, C, K) as a grid: RGB when C = 3 (each filter min-max scaled), else the channel mean in grey."""
    count = np.shape(kernels)[-1]
    columns = min(columns, count)
    rows = int(np.ceil(count / columns))
    fig = plt.figure(figsize=(1.3 * columns, 1.3 * rows + 0.6))
    _draw_kernels(fig, kernels, title, names, columns)
    fig.tight_layout()
    return fig


def _draw_kernels(fig, kernels: np.ndarray, title: str, names: list[str] | None, columns: int) -> None:
    """kernel_grid's drawing, into a figure or a subfigure."""
    kernels = np.asarray(kernels, dtype=np.float64)
    count = kernels.shape[-1]
    columns = min(columns, count)
    axes = fig.subplots(int(np.ceil(count / columns)), columns, squeeze=False)
    for k, ax in enumerate(axes.ravel()):
        ax.set_axis_off()
        if k >= count:
            continue
        w = kernels[..., k]
        if w.shape[-1] == 3:
            ax.imshow((w - w.min()) / (np.ptp(w) or 1), interpolation="nearest")
        else:
            ax.imshow(w.mean(axis=-1), cmap="gray", interpolation="nearest")
        if names:
            ax.set_title(names[k], fontsize=7)
    fig.suptitle(title)


def kernel_banks(banks: dict[str, np.ndarray], columns: int = 4) -> plt.Figure:
    """Several filter banks (F, F, C, K) side by side, each titled: learned kernels next to Sobel and Gabor."""
    widths = [min(columns, np.shape(k)[-1]) for k in banks.values()]
    rows = max(int(np.ceil(np.shape(k)[-1] / w)) for k, w in zip(banks.values(), widths))
    fig = plt.figure(figsize=(1.3 * sum(widths) + 0.5 * len(banks), 1.3 * rows + 0.8), layout="constrained")
    for subfigure, (title, kernels), width in zip(
        fig.subfigures(1, len(banks), width_ratios=widths), banks.items(), widths
    ):
        _draw_kernels(subfigure, kernels, title, None, width)
    return fig


def kernel_norms(norms: dict[str, np.ndarray]) -> plt.Figure:
    """Deeper layers' kernels summarised: a histogram of the L2 norm of each filter, one panel per layer."""
    fig, axes = _image_grid(len(norms), 4, (3.0, 2.4))
    for ax, (name, values) in zip(axes, norms.items()):
        ax.set_axis_on()
        ax.hist(values, bins=20, color="#4363d8")
        ax.set_title(f"{name} ({len(values)} filters)", fontsize=8)
        ax.tick_params(labelsize=6)
    fig.suptitle("filter norms ||w||, layer by layer")
    fig.tight_layout()
    return fig


def _show_image(ax, image: np.ndarray) -> None:
    """A raw [0, 255] image: grey for one channel, RGB otherwise."""
    if image.shape[-1] == 1:
        ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=255)
    else:
        ax.imshow(np.clip(image, 0, 255).astype(np.uint8))


def _show_normalised(ax, image: np.ndarray) -> None:
    """A synthesized image or a gradient: centred, scaled to its own spread (mean ± 3 std) for display."""
    image = (image - image.mean()) / (3 * image.std() + 1e-12)
    image = np.clip(0.5 + 0.5 * image, 0, 1)
    ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=1)


def feature_maps(images: np.ndarray, maps: np.ndarray, title: str, max_channels: int = 16) -> plt.Figure:
    """One row per input: the image, then its first `max_channels` feature maps (each on its own scale)."""
    channels = min(max_channels, maps.shape[-1])
    fig, axes = plt.subplots(len(images), channels + 1, figsize=(1.1 * (channels + 1), 1.2 * len(images) + 0.5))
    axes = np.asarray(axes).reshape(len(images), channels + 1)
    for row, (image, fmap) in enumerate(zip(images, maps)):
        _show_image(axes[row, 0], image)
        for c in range(channels):
            axes[row, c + 1].imshow(fmap[..., c], cmap="viridis", interpolation="nearest")
            if row == 0:
                axes[row, c + 1].set_title(str(c), fontsize=6)
    for ax in axes.ravel():
        ax.set_axis_off()
    fig.suptitle(f"{title}: {maps.shape[1]}x{maps.shape[2]}x{maps.shape[3]}", fontsize=9)
    fig.tight_layout()
    return fig


def heatmaps(
    images: np.ndarray, maps: list[np.ndarray], titles: list[str], row_titles: list[str], title: str, cmap: str = "jet"
) -> plt.Figure:
    """One row per input: the image, then each map (N, H, W) laid over it (jet for [0, 1] maps; RdBu_r,
    symmetric around zero, for signed ones such as an occlusion's score drop)."""
    columns = len(maps) + 1
    fig, axes = plt.subplots(len(images), columns, figsize=(1.9 * columns, 1.9 * len(images) + 0.4))
    axes = np.asarray(axes).reshape(len(images), columns)
    for row, image in enumerate(images):
        _show_image(axes[row, 0], image)
        axes[row, 0].set_title(row_titles[row], fontsize=7)
        for column, (values, name) in enumerate(zip(maps, titles), start=1):
            ax = axes[row, column]
            ax.imshow(image.mean(axis=-1), cmap="gray", vmin=0, vmax=255)
            limit = np.abs(values[row]).max() or 1.0
            scale = {"vmin": -limit, "vmax": limit} if cmap == "RdBu_r" else {"vmin": 0, "vmax": limit}
            ax.imshow(values[row], cmap=cmap, alpha=0.55, **scale)
            if row == 0:
                ax.set_title(name, fontsize=7)
    for ax in axes.ravel():
        ax.set_axis_off()
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def synthesized_grid(images: np.ndarray, titles: list[str], title: str, columns: int = 8) -> plt.Figure:
    """Synthesized inputs or guided-backprop projections, each scaled to its own range."""
    fig, axes = _image_grid(len(images), columns, (1.4, 1.6))
    for ax, image, name in zip(axes, images, titles):
        _show_normalised(ax, image)
        ax.set_title(name, fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def receptive_field_growth(layer_names: list[str], sizes: list[float], input_size: int) -> plt.Figure:
    """Receptive field size of each spatial layer's output, against the input size."""
    fig, ax = plt.subplots(figsize=(max(6, 0.28 * len(layer_names)), 4))
    ax.plot(range(len(sizes)), sizes, marker="o")
    ax.axhline(input_size, color="grey", linestyle="--", label=f"input size ({input_size})")
    ax.set_xticks(range(len(layer_names)), layer_names, rotation=90, fontsize=7)
    ax.set(ylabel="receptive field (pixels)", title="receptive field growth, layer by layer")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def filter_responses(image: np.ndarray, responses: list[np.ndarray], names: list[str]) -> plt.Figure:
    """An image and its response to each filter (red positive, blue negative, symmetric scale)."""
    fig, axes = plt.subplots(1, len(responses) + 1, figsize=(2.2 * (len(responses) + 1), 2.6))
    axes[0].imshow(image.astype(np.uint8))
    axes[0].set_title("image", fontsize=8)
    for ax, response, name in zip(axes[1:], responses, names):
        limit = np.abs(response).max() or 1
        ax.imshow(response, cmap="RdBu_r", vmin=-limit, vmax=limit)
        ax.set_title(name, fontsize=8)
    for ax in axes:
        ax.set_axis_off()
    fig.tight_layout()
    return fig


def _image_grid(count: int, columns: int, cell: tuple[float, float]):
    """A figure with one axis per image (row-major, axes switched off) and the axes that hold an image."""
    columns = max(1, min(columns, count))
    rows = int(np.ceil(count / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(cell[0] * columns, cell[1] * rows), squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    return fig, axes.ravel()[:count]


def classification_grid(
    images: np.ndarray, truth: np.ndarray, predicted: np.ndarray, class_names: list[str], columns: int = 8
) -> plt.Figure:
    """Test images titled 'predicted (true)', wrong ones in red."""
    fig, axes = _image_grid(len(images), columns, (1.4, 1.6))
    for ax, image, t, p in zip(axes, images, truth, predicted):
        ax.imshow(image[..., 0] if image.shape[-1] == 1 else image.astype(np.uint8), cmap="gray")
        ax.set_title(f"{class_names[p]} ({class_names[t]})", fontsize=7, color="black" if t == p else "red")
    fig.tight_layout()
    return fig


def accuracy_against_shift(shifts: list[int], curves: dict[str, list[float]]) -> plt.Figure:
    """Test accuracy as the test objects move away from where training saw them, one line per model."""
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name, accuracies in curves.items():
        ax.plot(shifts, accuracies, marker="o", label=name)
    ax.set(xlabel="shift of the test images (pixels)", ylabel="test accuracy", ylim=(0, 1.02), title="shift invariance")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def box_grid(images: np.ndarray, truth: np.ndarray, predicted: np.ndarray, columns: int = 8) -> plt.Figure:
    """Images with the true box (green) and the predicted one (red); boxes are fractions of the image size."""
    fig, axes = _image_grid(len(images), columns, (1.6, 1.6))
    for ax, image, true_box, predicted_box in zip(axes, images, truth, predicted):
        height, width = image.shape[:2]
        ax.imshow(image.astype(np.uint8))
        for box, colour in ((true_box, "lime"), (predicted_box, "red")):
            x0, y0, x1, y1 = box * np.array([width, height, width, height])
            ax.add_patch(plt.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, color=colour, linewidth=1.2))
    fig.tight_layout()
    return fig


def values_scatter(truth: np.ndarray, predicted: np.ndarray, names: list[str]) -> plt.Figure:
    """Predicted against true values, one panel per output, with the identity line."""
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.2), squeeze=False)
    for k, (ax, name) in enumerate(zip(axes[0], names)):
        low, high = (
            float(min(truth[:, k].min(), predicted[:, k].min())),
            float(max(truth[:, k].max(), predicted[:, k].max())),
        )
        ax.plot([low, high], [low, high], color="grey", linewidth=1)
        ax.scatter(truth[:, k], predicted[:, k], s=8, alpha=0.6)
        ax.set(title=name, xlabel="true", ylabel="predicted")
    fig.tight_layout()
    return fig


def metric_against_params(values: dict[str, list[str]], metric: list[float], metric_name: str) -> plt.Figure:
    """A sweep's headline metric against each swept parameter, one panel per parameter (one point per
    job): numeric values on a numeric axis (logarithmic when they span over 20x), others as categories."""
    fig, axes = plt.subplots(1, len(values), figsize=(4 * len(values), 3.4), squeeze=False)
    for ax, (name, column) in zip(axes[0], values.items()):
        try:
            x = np.array([float(v) for v in column])
        except ValueError:
            categories = sorted(set(column))
            x = np.array([categories.index(v) for v in column], dtype=float)
            ax.set_xticks(range(len(categories)), categories, rotation=30 if len(categories) > 3 else 0)
        else:
            if x.min() > 0 and x.max() / x.min() > 20:
                ax.set_xscale("log")
                ax.xaxis.set_minor_formatter(NullFormatter())  # 2x10^-4 3x10^-4 ... would overlap
            if len(set(x)) == len(x) > 2:  # one job per value (a 1-D sweep): draw it as a curve
                order = np.argsort(x)
                ax.plot(x[order], np.asarray(metric)[order], "-", alpha=0.6)
        ax.scatter(x, metric, s=36)
        ax.set(xlabel=name, ylabel=metric_name)
        ax.grid(alpha=0.3)
    fig.suptitle(f"{metric_name} per job")
    fig.tight_layout()
    return fig


def accuracy_against_k(
    sizes: list[float], curves: dict[str, tuple[list[float], list[float]]], labels: list[str], title: str
) -> plt.Figure:
    """Target test accuracy against training images per class (log axis), one line per strategy with
    its spread over seeds as error bars: the lecture's when-does-transfer-pay table as a picture."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, (means, stds) in curves.items():
        ax.errorbar(sizes, means, yerr=stds, marker="o", capsize=3, label=name)
    ax.set_xscale("log")
    ax.set_xticks(sizes, labels)
    ax.minorticks_off()
    ax.set(xlabel="training images per class (k)", ylabel="target test accuracy", ylim=(0, 1.02), title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def contact_sheet(
    images: np.ndarray,
    names: list[str],
    predicted: np.ndarray,
    probabilities: np.ndarray,
    class_names: list[str],
    columns: int = 8,
) -> plt.Figure:
    """Predicted images titled 'file: class (probability)'."""
    fig, axes = _image_grid(len(images), columns, (1.6, 1.8))
    for ax, image, name, p, row in zip(axes, images, names, predicted, probabilities):
        ax.imshow(image[..., 0] if image.shape[-1] == 1 else image.astype(np.uint8), cmap="gray")
        ax.set_title(f"{name[:14]}\n{class_names[p]} ({row[p]:.2f})", fontsize=7)
    fig.tight_layout()
    return fig


def cell_tuning(measurements) -> plt.Figure:
    """Simple vs complex cell (pipeline.lecture.biology.measure_cells): orientation tuning, and the response as the
    grating shifts by one period (position)."""
    m = measurements
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    for curve, name, style in (
        (m.simple_orientation, "simple cell", "-o"),
        (m.complex_orientation, "complex cell", "-s"),
    ):
        left.plot(np.degrees(m.orientations), curve / curve.max(), style, markersize=3, label=name)
    left.set(xlabel="grating orientation (degrees)", ylabel="response / peak", title="orientation tuning")
    for curve, name, style in ((m.simple_phase, "simple cell", "-o"), (m.complex_phase, "complex cell", "-s")):
        right.plot(
            np.degrees(m.phases) / 360,
            curve / max(m.simple_phase.max(), m.complex_phase.max()),
            style,
            markersize=3,
            label=name,
        )
    right.set(
        xlabel="grating shift (periods)",
        ylabel="response / peak",
        title="position (phase) at the preferred orientation",
    )
    for ax in (left, right):
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def sensor_grid(images: dict[str, np.ndarray]) -> plt.Figure:
    """One scene through several sensors and light levels, titled by each."""
    fig, axes = _image_grid(len(images), len(images), (2.0, 2.2))
    for ax, (title, image) in zip(axes, images.items()):
        ax.imshow(image.astype(np.uint8))
        ax.set_title(title, fontsize=8)
    fig.tight_layout()
    return fig
