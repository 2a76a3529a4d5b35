"""Analyze stage: a model's conv arithmetic without training — shapes, parameters, receptive fields, FLOPs.

    python -m pipeline.analyze                    # the configured model (U-Net) on the data's input size
    python -m pipeline.analyze model.depth=3 data.image_size=128
Writes report.md and figures to the job folder and logs them to MLflow as a run of its own.
"""

import logging
import shutil
from pathlib import Path

import hydra
import keras
import numpy as np
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from pipeline import tracking, viz
from pipeline.arithmetic import conv_vs_dense, layer_flops, receptive_fields, stacked_small_filters
from pipeline.config import conf_dir, stage
from pipeline.data.shapes import ShapesSpec, render_sample
from pipeline.kernels import SOBEL_X, SOBEL_Y, correlate2d, gabor_bank, sobel_bank
from pipeline.models import build_model
from pipeline.train import model_options, validate

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


@hydra.main(version_base="1.3", config_path=conf_dir(), config_name="analyze")
@stage
def main(cfg: DictConfig) -> float:
    validate(cfg)
    classes = list(cfg.data.classes)
    shape = (cfg.data.image_size, cfg.data.image_size, cfg.data.get("channels", 3))
    model = build_model(cfg.model.name, shape, len(classes), **model_options(cfg.model))
    rows = layer_table(model)
    text, summary = report(model, rows)
    out = Path(HydraConfig.get().runtime.output_dir)
    (out / "plots").mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text(text)
    for name, figure in figures(model, rows, cfg.data.image_size).items():
        figure.savefig(out / "plots" / name, dpi=110)
        viz.plt.close(figure)
    if cfg.export_dir:
        shutil.copytree(out / "plots", Path(cfg.export_dir), dirs_exist_ok=True)
    tags = {"stage": "analyze", "model": cfg.model.name, "data": cfg.data.name}
    with tracking.run(
        cfg.tracking.uri, cfg.tracking.experiment, cfg.tracking.run_name, cfg.tracking.artifact_root, tags
    ):
        tracking.log_params({"model": dict(model_options(cfg.model), name=cfg.model.name), "input_shape": str(shape)})
        tracking.log_metrics(summary)
        tracking.log_text(text, "report.md")
        tracking.log_dir(out / "plots", "plots")
    print(text)
    log.info("report and figures written to %s", out)
    return float(summary["receptive_field"])


if __name__ == "__main__":
    main()
