"""Visualize stage: what a trained CNN learned, as pictures in an MLflow run nested under the source run.

    cnn visualize source=<run id>                  # the run's model, on its own test images
    cnn visualize source=model.keras data=digits image=my_digit.png
Logs plots/filters/, plots/activations/, plots/saliency.png, plots/gradcam.png, plots/occlusion.png,
plots/maximization/ and plots/deconv/ (see pipeline.interpret.explain), with a progress line per picture family.
"""

import logging
import shutil
import tempfile
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from pipeline.config import stage_main

log = logging.getLogger(__name__)
FAMILIES = ("filters", "activations", "attribution", "maximization", "deconv")


@stage_main("visualize")
def main(cfg: DictConfig) -> float:
    from pipeline.config.schema import check_schema

    check_schema(cfg)
    import numpy as np

    from pipeline import tracking
    from pipeline.data.sources import class_names
    from pipeline.errors import ConfigError
    from pipeline.interpret import explain, probes
    from pipeline.models.precision import float32_model
    from pipeline.tasks import get_task

    model, source_run = tracking.load_model(str(cfg.source), cfg.tracking.uri)
    model = float32_model(model)
    data = cfg.data
    if source_run and (source := tracking.load_run_config(source_run)):
        data = OmegaConf.create(source["data"])  # explain the model on what it was trained on
    if not probes.conv_layers(model):
        raise ConfigError(f"model {model.name} has no conv layers: there are no filters or feature maps to picture")
    task = get_task(data.task)
    classes = class_names(data, Path(str(data.get("root", "."))))
    shape = tuple(model.inputs[0].shape[1:])
    images, targets = explain.pick_inputs(cfg.image, cfg.split, cfg.num_images, data, shape)
    layer = cfg.layer or probes.last_conv_layer(model)
    if layer not in {item.name for item in model.layers}:
        raise ConfigError(f"layer={layer!r} is not in model {model.name}; e.g. {probes.last_conv_layer(model)}")

    with (
        tempfile.TemporaryDirectory(prefix="visualize-") as name,
        tqdm(FAMILIES, desc="visualize", unit="family") as bar,
    ):
        folder = Path(name)
        bar.set_postfix_str("filters")
        explain.save(explain.filter_figures(model), folder)
        bar.update()
        bar.set_postfix_str("activations")
        maps = probes.activation_maps(model, [item.name for item in probes.spatial_layers(model)], images)
        for k, (name, values) in enumerate(maps.items()):
            explain.save(
                {f"activations/{k:02d}_{name}.png": explain.viz.feature_maps(images, values, name, cfg.max_channels)},
                folder,
            )
        bar.update()
        bar.set_postfix_str("saliency, Grad-CAM, occlusion")
        patch, stride = cfg.occlusion.patch, cfg.occlusion.stride
        explain.save(explain.attribution_figures(model, images, targets, task, classes, layer, patch, stride), folder)
        bar.update()
        bar.set_postfix_str("activation maximization")
        maximized = explain.chosen_layers(model, cfg.maximization.layers, cfg.maximization.max_layers)
        gains = explain.maximization_figures(model, maximized, classes, cfg.maximization, folder)
        bar.update()
        bar.set_postfix_str("deconvolution")
        deconv = explain.chosen_layers(model, cfg.deconv.layers, cfg.deconv.max_layers)
        explain.save(explain.deconv_figures(model, deconv, images[0], cfg.deconv.top), folder)
        bar.update()

        tags = {"stage": "visualize", "source": str(cfg.source), "source_run": source_run or "", "data": data.name}
        with tracking.run(
            cfg.tracking.uri,
            cfg.tracking.experiment,
            cfg.tracking.run_name,
            cfg.tracking.artifact_root,
            tags,
            source_run,
        ):
            params = {"source": cfg.source, "source_run": source_run, "image": cfg.image, "split": cfg.split}
            tracking.log_params({**params, "layer": layer})
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
