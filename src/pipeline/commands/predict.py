"""Predict stage: apply any trained model to a folder of images of any size.

    cnn predict source=<run id | .keras | models:/...> input_dir=photos/ [mode=tile]
What it writes is the task's (the source run's data.task): masks/ (class indices) and overlays/ for
segmentation (mode=resize scales each image to the model's input size and the probabilities back;
mode=tile slides the model over the full-resolution image); predictions.csv (file, label, one
probability per class) and contact_sheet.png for classification; boxes.csv and boxes/ for localization.
Grey models get grey input, and files of any bit depth are mapped by the training run's data.intensity.
Masks are palette PNGs (class indices that viewers show in colour). Two inputs with one stem (photo.png,
photo.jpg) get distinct outputs; the CSVs name each file as found in input_dir.
"""

import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from pipeline.config import stage_main

log = logging.getLogger(__name__)


@stage_main("predict")
def main(cfg: DictConfig) -> None:
    from pipeline.config.schema import check_schema

    check_schema(cfg)
    from pipeline import tracking
    from pipeline.data.folders import IMAGE_SUFFIXES, read_images
    from pipeline.data.pixels import AUTO
    from pipeline.data.sources import class_names, intensity
    from pipeline.errors import DataError
    from pipeline.tasks import get_task, infer_task, unique_names

    input_dir, output_dir = Path(cfg.input_dir), Path(cfg.output_dir)
    if not input_dir.is_dir():
        raise DataError(f"{input_dir}: input_dir not found")
    paths = sorted(p for p in input_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise DataError(f"{input_dir}: no images ({', '.join(IMAGE_SUFFIXES)})")
    model, source_run = tracking.load_model(str(cfg.source), cfg.tracking.uri)
    source = tracking.load_run_config(source_run) if source_run else None
    data = OmegaConf.create(source["data"]) if source else None
    task = get_task(data.task) if data is not None else infer_task(model)
    outputs = model.outputs[0].shape[-1]
    classes = class_names(data, Path(str(data.get("root") or "."))) if data is not None else None
    classes = classes or [str(c) for c in range(outputs)]
    mapping = intensity(data) if data is not None else AUTO  # the training run's data.intensity, as in training
    images = read_images(paths, model.inputs[0].shape[-1], mapping)  # grey models get grey input
    written = task.predict(
        model,
        images,
        unique_names(paths),
        classes,
        output_dir,
        mode=cfg.mode,
        tile_overlap=cfg.tile_overlap,
        tta=cfg.tta,
        batch_size=cfg.batch_size,
        num_logged=cfg.num_logged,
        tile_blend=cfg.tile_blend,
        background=cfg.background,
        files=[path.relative_to(input_dir).as_posix() for path in paths],
    )
    tags = {"stage": "predict", "task": task.name, "source": str(cfg.source), "mode": cfg.mode}
    with tracking.run(
        cfg.tracking.uri, cfg.tracking.experiment, cfg.tracking.run_name, cfg.tracking.artifact_root, tags, source_run
    ):
        tracking.log_params({"source": cfg.source, "input_dir": str(input_dir), "output_dir": str(output_dir)})
        tracking.log_metrics({"num_images": len(paths), "files_written": len(written.files)})
        for path in written.logged:
            tracking.log_artifact(
                path, path.parent.relative_to(output_dir).as_posix() if path.parent != output_dir else None
            )
    log.info("%s: %d images -> %d files in %s", task.name, len(paths), len(written.files), output_dir)


if __name__ == "__main__":
    main()
