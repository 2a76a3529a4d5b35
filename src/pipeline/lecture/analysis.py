"""A model's conv arithmetic without training — shapes, parameters, receptive fields, FLOPs — as a table,
a report and figures (the library behind `cnn analyze`)."""

import logging

import keras
import numpy as np

from pipeline.data.shapes import ShapesSpec, render_sample
from pipeline.lecture.arithmetic import conv_vs_dense, layer_flops, receptive_fields, stacked_small_filters
from pipeline.lecture.kernels import SOBEL_X, SOBEL_Y, correlate2d, gabor_bank, sobel_bank
from pipeline.plots import viz

log = logging.getLogger(__name__)


def layer_table(model: keras.Model) -> list[dict]:
    """One row per layer: type, output shape, parameters, kernel/stride, receptive field, jump, FLOPs."""
    fields = receptive_fields(model)
    rows = []
    for layer in model.layers:
        rf_rows, _ = fields[layer.name]
        kernel = getattr(layer, "kernel_size", None) or getattr(layer, "pool_size", None)
        stride = getattr(layer, "strides", None)
        rows.append(
            {
                "layer": layer.name,
                "type": type(layer).__name__,
                "output": tuple(layer.output.shape[1:]),
                "params": layer.count_params(),
                "window": f"{kernel[0]}x{kernel[1]}/{stride[0] if stride else 1}" if kernel else "",
                "rf": rf_rows.size,
                "jump": rf_rows.jump,
                "flops": layer_flops(layer),
            }
        )
    return rows


def report(model: keras.Model, rows: list[dict]) -> tuple[str, dict[str, float]]:
    """The Markdown report and its headline numbers."""
    conv_types = ("Conv2D", "Conv2DTranspose", "DepthwiseConv2D", "SeparableConv2D", "FixedKernelConv2D")
    conv_params = sum(r["params"] for r in rows if r["type"] in conv_types)
    dense_params = sum(r["params"] for r in rows if r["type"] == "Dense")
    total = model.count_params()
    summary = {
        "num_params": total,
        "conv_param_share": conv_params / total if total else 0.0,
        "dense_param_share": dense_params / total if total else 0.0,
        "receptive_field": max(r["rf"] for r in rows),
        "gflops": sum(r["flops"] for r in rows) / 1e9,
    }
    height, width, channels = model.inputs[0].shape[1:]
    first_conv = next(layer for layer in model.layers if hasattr(layer, "kernel_size") and hasattr(layer, "filters"))
    cvd = conv_vs_dense(height, width, channels, first_conv.kernel_size[0], first_conv.filters)
    small = stacked_small_filters(64)
    lines = [
        f"# {model.name}: layers, parameters, receptive fields, FLOPs",
        "",
        f"Input {height}x{width}x{channels}. {total:,} parameters ({summary['conv_param_share']:.1%} in conv "
        f"layers, {summary['dense_param_share']:.1%} in dense layers); output receptive field "
        f"{summary['receptive_field']:g} px; {summary['gflops']:.3f} GFLOPs per image (forward).",
        "",
        "| layer | type | output shape | params | window/stride | receptive field | jump | MFLOPs |",
        "|---|---|---|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        shape = "x".join(str(d) for d in r["output"])
        lines.append(
            f"| {r['layer']} | {r['type']} | {shape} | {r['params']:,} | {r['window']} | {r['rf']:g} | {r['jump']:g} | "
            f"{r['flops'] / 1e6:.2f} |"
        )
    lines += [
        "",
        "## Locality and parameter sharing",
        f"The first conv layer ({first_conv.name}: {first_conv.filters} filters of "
        f"{first_conv.kernel_size[0]}x{first_conv.kernel_size[1]}) has {cvd['conv']:,} parameters; a fully-connected "
        f"layer mapping the same {height}x{width}x{channels} input to the same {height}x{width}x{first_conv.filters} "
        f"output would need {cvd['dense']:,} ({cvd['ratio']:,}x more).",
        "",
        "## The power of small filters",
        f"With C = 64 channels, one 7x7 conv has 49C² = {small['large']:,} weights; {small['layers']} stacked "
        f"3x3 convs with the same 7x7 receptive field have 27C² = {small['stacked']:,}, and "
        f"{small['layers'] - 1} more non-linearities.",
    ]
    return "\n".join(lines) + "\n", summary


def filter_demo():
    """Sobel and Gabor responses on one generated shapes image: edges by orientation, textures by frequency."""
    image, _ = render_sample(ShapesSpec(image_size=96, min_size=10, max_size=24, noise_std=4.0), "test", 7)
    grey = image.mean(axis=-1)
    gabors = gabor_bank(size=11, orientations=4, wavelengths=(6.0,))[:, :, 0, :]
    kernels = [SOBEL_X, SOBEL_Y] + [gabors[..., k] for k in range(4)]
    # reflect at the border so the picture shows the shapes' edges, not the image frame's
    responses = [correlate2d(np.pad(grey, len(k) // 2, mode="reflect"), k) for k in kernels]
    names = ["Sobel x", "Sobel y"] + [f"Gabor θ={45 * k}°" for k in range(4)]
    return viz.filter_responses(image, responses, names)


def figures(model: keras.Model, rows: list[dict], input_size: int) -> dict[str, "viz.plt.Figure"]:
    """The report's pictures by file name."""
    first_conv = next(layer for layer in model.layers if hasattr(layer, "kernel_size") and hasattr(layer, "filters"))
    spatial = [r for r in rows if r["window"]]
    return {
        "stem_kernels.png": viz.kernel_grid(
            keras.ops.convert_to_numpy(first_conv.kernel), f"{first_conv.name} kernels (initial)"
        ),
        "sobel_bank.png": viz.kernel_grid(sobel_bank(), "Sobel x, y", ["x", "y"]),
        "gabor_bank.png": viz.kernel_grid(gabor_bank(size=15), "Gabor bank (4 orientations x 2 wavelengths)"),
        "filter_responses.png": filter_demo(),
        "receptive_field.png": viz.receptive_field_growth(
            [r["layer"] for r in spatial], [r["rf"] for r in spatial], input_size
        ),
    }
