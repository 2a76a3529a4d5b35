"""Analyze stage: a model's conv arithmetic without training — shapes, parameters, receptive fields, FLOPs.

    cnn analyze                    # the configured model (U-Net) on the data's input size
    cnn analyze model.depth=3 data.image_size=128
Writes report.md and figures to the job folder and logs them to MLflow as a run of its own.
"""

import logging
import shutil
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from pipeline.config import stage_main

log = logging.getLogger(__name__)


@stage_main("analyze")
def main(cfg: DictConfig) -> float:
    from pipeline.config.schema import validate_config

    validate_config(cfg)
    from pipeline import tracking
    from pipeline.lecture.analysis import figures, layer_table, report
    from pipeline.models import build_model
    from pipeline.plots import viz
    from pipeline.training.fit import model_options

    classes = list(cfg.data.classes)
    shape = (cfg.data.image_size, cfg.data.image_size, cfg.data.get("channels", 3))
    options = model_options(OmegaConf.to_container(cfg.model, resolve=True))
    model = build_model(cfg.model.name, shape, len(classes), **options)
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
        tracking.log_params({"model": dict(options, name=cfg.model.name), "input_shape": str(shape)})
        tracking.log_metrics(summary)
        tracking.log_text(text, "report.md")
        tracking.log_dir(out / "plots", "plots")
    print(text)
    log.info("report and figures written to %s", out)
    return float(summary["receptive_field"])


if __name__ == "__main__":
    main()
