"""Evaluate stage: score any trained model (segmentation, classification, localization) on a split and log
it as a run nested under its source.

    cnn evaluate source=<run id>            # the run's logged model, on the run's own data
    cnn evaluate source=outputs/.../checkpoints/best.keras split=val tta=true
The split streams from its files batch by batch (a split of any size runs in the memory of a few batches).
Logs the task's scores with the split as prefix (test_mean_iou, test_accuracy, test_box_iou, ...; the headline
with its 95 % bootstrap interval over images, test_mean_iou_ci_low and _ci_high), its
pictures (confusion matrix, best and worst predictions, surest errors, boxes drawn) and, for classifiers
and localizers, predictions.csv (each image's prediction).
"""

import logging

from omegaconf import DictConfig, OmegaConf

from pipeline.config import stage_main

log = logging.getLogger(__name__)


@stage_main("evaluate")
def main(cfg: DictConfig) -> float:
    from pipeline.config.schema import check_schema

    check_schema(cfg)
    from pipeline import tracking
    from pipeline.data.folders import BadFiles
    from pipeline.data.samples import worker_count
    from pipeline.data.sources import class_names, prepare_data, split_samples
    from pipeline.tasks import get_task
    from pipeline.tasks.scoring import evaluate
    from pipeline.tasks.tta import check as check_views
    from pipeline.training.fit import log_report

    model, source_run = tracking.load_model(str(cfg.source), cfg.tracking.uri)
    data, loss = cfg.data, cfg.loss
    if cfg.use_source_data and source_run and (source := tracking.load_run_config(source_run)):
        data, loss = OmegaConf.create(source["data"]), OmegaConf.create(source["loss"])  # what it was trained on
    task = get_task(data.task)
    size = tuple(model.inputs[0].shape[1:3]) if hasattr(model, "inputs") else None
    views = check_views(cfg.tta, task, size)  # before the data is prepared
    root = prepare_data(data, progress=False)
    classes = class_names(data, root)
    bad = BadFiles(data.get("on_bad_file", "error"))
    samples = split_samples(data, root, bad, cache=False)[cfg.split]  # an index: streamed batch by batch
    report = evaluate(
        task,
        model,
        samples,
        classes,
        cfg.batch_size,
        num_examples=cfg.num_examples,
        tta=views,
        ignore_label=loss.get("ignore_label"),
        bad=bad,
        workers=worker_count(data.get("workers", "auto")),
        desc=f"scoring {cfg.split}",
    )
    prefix = "test" if cfg.split == "test" else cfg.split
    tags = {"stage": "evaluate", "task": task.name, "data": data.name, "source": str(cfg.source), "tta": views}
    with tracking.run(
        cfg.tracking.uri, cfg.tracking.experiment, cfg.tracking.run_name, cfg.tracking.artifact_root, tags, source_run
    ):
        params = {"source": cfg.source, "split": cfg.split, "tta": views}
        tracking.log_params({**params, "data": OmegaConf.to_container(data, resolve=True)})
        log_report(report, prefix)
        if report.table is not None:
            tracking.log_text(report.table, "predictions.csv")
    return report.value


if __name__ == "__main__":
    main()
