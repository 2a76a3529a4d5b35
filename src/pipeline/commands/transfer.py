"""Transfer stage: the lecture's recipe — train on a large set, then reuse the network on a small one.

    cnn transfer transfer.source=<run id> transfer.strategy=feature_extraction
    cnn transfer transfer.source=MobileNetV2 transfer.weights=mnv2.weights.h5 transfer.alpha=0.35
    cnn transfer -m experiment=transfer_study          # strategy x k, then pipeline.commands.transfer_study

Strategies (scratch, feature_extraction, fine_tune, full) are described in pipeline.training.transfer.
Batch norm in a reused backbone always runs in inference mode. The last epoch is scored (no
checkpoint picked on a validation set that may be larger than the training set); its validation score is
what the stage returns and a sweep ranks by (selection_<monitor>), its test score the held-out estimate.
"""

from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from pipeline.config import stage_main


@stage_main("transfer")
def main(cfg: DictConfig) -> float:
    from pipeline.config.schema import check_schema

    check_schema(cfg)  # not the train stage's model checks: the model here comes from transfer.source
    import keras
    import numpy as np

    from pipeline import tracking
    from pipeline.data.augment import build_augmentation
    from pipeline.data.sequence import ImageBatches
    from pipeline.data.sources import class_names, load_splits, prepare_data
    from pipeline.plots import viz
    from pipeline.tasks import direction, get_task
    from pipeline.training.fit import log_selection, test_and_log
    from pipeline.training.runtime import configure_runtime
    from pipeline.training.transfer import build_transfer_model, fit_phases, load_backbone, phases

    keras.utils.clear_session()  # a multirun runs its jobs in one process
    configure_runtime(cfg.seed, cfg.trainer.precision, cfg.trainer.deterministic)
    t, task = cfg.transfer, get_task(cfg.data.task)
    root = prepare_data(cfg.data, progress=False)
    classes = class_names(cfg.data, root)
    splits = load_splits(cfg.data, root)
    (x_train, y_train), (x_test, y_test) = splits["train"], splits["test"]
    lr = cfg.optimizer.lr
    schedule = phases(t.strategy, cfg.trainer.epochs, t.warmup_epochs, lr, t.lr_factor, t.fine_tune_blocks)
    fresh = t.strategy == "scratch"
    backbone, source_run = load_backbone(
        str(t.source), task, x_train.shape[1:], cfg.tracking.uri, fresh, t.weights, t.alpha
    )
    model = build_transfer_model(backbone, task, len(classes), t.strategy, t.head_dropout, t.base_filters)
    loss, metrics = task.loss_and_metrics(OmegaConf.to_container(cfg.loss, resolve=True), len(classes))

    def compile_model(optimizer):
        model.compile(optimizer=optimizer, loss=loss, metrics=metrics, jit_compile=cfg.trainer.jit_compile)

    augment = build_augmentation(cfg.augment.train, seed=cfg.seed, target=task.target)
    batch = cfg.trainer.batch_size
    train_batches = ImageBatches(x_train, y_train, batch, augment, True, cfg.seed, target=task.target)
    val_batches = ImageBatches(*splits["val"], batch, target=task.target)
    k = cfg.data.get("k_per_class")
    tags = {"stage": "transfer", "task": task.name, "data": cfg.data.name, "strategy": t.strategy}
    tags.update({"source": str(t.source), "k_per_class": str(k if k is not None else "all")})
    if source_run:
        tags["source_run"] = source_run
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode == RunMode.MULTIRUN:  # lets pipeline.commands.transfer_study find the runs of one sweep
        tags["sweep_dir"] = str(Path(hydra_cfg.sweep.dir).resolve())
    output_dir = Path(hydra_cfg.runtime.output_dir)

    with tracking.run(
        cfg.tracking.uri, cfg.tracking.experiment, cfg.tracking.run_name, cfg.tracking.artifact_root, tags
    ):
        params = OmegaConf.to_container(cfg, resolve=True)
        params.pop("model")  # the transfer stage's model is the source's backbone plus a new head
        tracking.log_params(params)
        tracking.log_dir(output_dir / ".hydra", "config")
        tracking.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config/resolved.yaml")
        tracking.log_metrics({"num_params": model.count_params(), "train_images": len(x_train)})
        optimizer_cfg = OmegaConf.to_container(cfg.optimizer, resolve=True)
        history = fit_phases(
            model, backbone, schedule, compile_model, train_batches, val_batches, optimizer_cfg, cfg.trainer.verbose
        )
        monitor = cfg.trainer.monitor or task.monitor
        last = len(history.get(monitor, [])) - 1
        selected = log_selection(history, monitor, direction(monitor), kept=last)  # the last epoch is kept
        examples, ignore = cfg.tracking.num_examples, cfg.loss.get("ignore_label")
        test_and_log(model, task, x_test, y_test, classes, batch, examples, ignore)
        tracking.log_figure(viz.training_curves(history), "plots/training_curves.png")
        if cfg.tracking.log_model:
            tracking.log_keras_model(model, x_test[:2].astype(np.float32))
    return selected


if __name__ == "__main__":
    main()
