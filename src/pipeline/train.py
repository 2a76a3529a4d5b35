"""Training stage: data -> model -> Keras fit (best checkpoint kept) -> test evaluation -> MLflow.

    python -m pipeline.train                          # the default shapes U-Net (`make train`)
    python -m pipeline.train --cfg job                # print the config
    python -m pipeline.train -m optimizer.lr=1e-3,3e-4
Segmentation sets (masks) and classification sets (labels) train the same way; the headline metric
(test mean IoU or test accuracy) is returned so Hydra sweepers can optimise it.
"""

import logging
from pathlib import Path

import hydra
import keras
import numpy as np
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from pipeline import sweep, tracking, viz
from pipeline.arithmetic import layer_flops
from pipeline.callbacks import StopOnNonFiniteLoss
from pipeline.classification import evaluate as evaluate_classification
from pipeline.config import checked_call, conf_dir, stage
from pipeline.data.augment import build_augmentation
from pipeline.data.folders import BadFiles
from pipeline.data.sequence import ImageBatches
from pipeline.data.shapes import read_manifest
from pipeline.errors import ConfigError
from pipeline.losses import SegmentationLoss
from pipeline.models import build_model
from pipeline.models.localization import BoxIoU, box_iou
from pipeline.prepare import class_names, load_data, prepare_data
from pipeline.resume import Checkpoints, resume_dir
from pipeline.segmentation import evaluate as evaluate_segmentation
from pipeline.training import Throughput, build_optimizer, configure_distribution, configure_runtime
from pipeline.validation import check_targets, check_task, validate_config

log = logging.getLogger(__name__)


def validate(cfg: DictConfig) -> None:
    """Checks that need no data (schema, and a dry build of the model), so a bad override fails before any work."""
    validate_config(cfg)


def model_options(model_cfg: DictConfig) -> dict:
    """conf/model/<name>.yaml minus its name: the builder's keyword arguments."""
    return {k: v for k, v in OmegaConf.to_container(model_cfg, resolve=True).items() if k != "name"}


def build_loss(loss_cfg: DictConfig, num_classes: int) -> SegmentationLoss:
    return checked_call(
        SegmentationLoss, OmegaConf.to_container(loss_cfg, resolve=True), "loss", num_classes=num_classes
    )


def task_loss(task: str, loss_cfg: DictConfig, num_classes: int) -> tuple:
    """The loss, the metrics and the validation metric to monitor for a task's targets."""
    if task == "segmentation":
        loss = build_loss(loss_cfg, num_classes)
        metrics = [
            keras.metrics.MeanIoU(num_classes, sparse_y_pred=False, ignore_class=loss.ignore_label, name="mean_iou")
        ]
        return loss, metrics, "val_mean_iou"
    if task == "localization":
        return keras.losses.Huber(delta=0.1), [BoxIoU()], "val_box_iou"
    loss = keras.losses.SparseCategoricalCrossentropy()
    return loss, [keras.metrics.SparseCategoricalAccuracy(name="accuracy")], "val_accuracy"


def compile_for_task(model: keras.Model, task: str, cfg: DictConfig, optimizer, num_classes: int) -> str:
    """Loss and metrics of the data's task; returns the metric the best checkpoint is chosen by."""
    if len(model.outputs) > 1 and task != "classification":
        raise ConfigError(
            f"model {cfg.model.name} has {len(model.outputs)} outputs; only classifiers may have auxiliary heads"
        )
    check_task(cfg.model.name, cfg.data.name, task)
    loss, metrics, default_monitor = task_loss(task, cfg.loss, num_classes)
    if len(model.outputs) > 1:  # GoogLeNet's auxiliary classifiers: weighted 0.3 in the loss, as in the paper
        main = model.output_names[0]
        model.compile(
            optimizer=optimizer,
            loss=[loss] * len(model.outputs),
            loss_weights=[1.0] + [0.3] * (len(model.outputs) - 1),
            metrics={main: metrics},
            jit_compile=cfg.trainer.jit_compile,
        )
        return cfg.trainer.monitor or f"val_{main}_accuracy"
    model.compile(optimizer=optimizer, loss=loss, metrics=metrics, jit_compile=cfg.trainer.jit_compile)
    return cfg.trainer.monitor or default_monitor


def shift_curve(model, x_test, y_test, classes, batch: int, shifts: list[int], name: str) -> None:
    """Accuracy on the test images moved right by each shift (np.roll: the scene wraps around), logged
    as metric shift_accuracy with the shift as its step, so MLflow overlays the curves of several runs."""
    accuracies = []
    for shift in shifts:
        moved = np.roll(x_test, shift, axis=2)
        accuracies.append(evaluate_classification(model, moved, y_test, classes, batch)[0]["accuracy"])
        tracking.log_metrics({"shift_accuracy": accuracies[-1]}, step=shift)
    tracking.log_figure(viz.accuracy_against_shift(shifts, {name: accuracies}), "plots/accuracy_vs_shift.png")
    log.info("accuracy against shift %s: %s", shifts, [round(a, 3) for a in accuracies])


def test_and_log(
    model: keras.Model, task: str, cfg: DictConfig, x_test, y_test, classes: list[str], model_choice: str
) -> float:
    """Scores the test split, logs test_* metrics and pictures; returns the headline metric."""
    batch, shown, cm = cfg.trainer.batch_size, slice(0, cfg.tracking.num_examples), None
    if task == "segmentation":
        ignore = cfg.loss.ignore_label
        scores, cm, predicted = evaluate_segmentation(model, x_test, y_test, classes, batch, ignore_label=ignore)
        figure = viz.prediction_grid(x_test[shown], y_test[shown], predicted[shown], classes)
        headline = "mean_iou"
    elif task == "localization":
        predicted = model.predict(x_test.astype(np.float32), batch_size=batch, verbose=0)
        ious = keras.ops.convert_to_numpy(box_iou(y_test, predicted))
        scores = {"box_iou": float(ious.mean()), "box_iou_above_0.5": float((ious > 0.5).mean())}
        figure = viz.box_grid(x_test[:16], y_test[:16], predicted[:16])
        headline = "box_iou"
    else:
        scores, cm, predicted = evaluate_classification(model, x_test, y_test, classes, batch)
        if cfg.data.get("test_shifts"):
            shift_curve(model, x_test, y_test, classes, batch, list(cfg.data.test_shifts), model_choice)
        shown = slice(0, 4 * cfg.tracking.num_examples)
        figure = viz.classification_grid(x_test[shown], y_test[shown], predicted[shown], classes)
        headline = "accuracy"
    tracking.log_metrics({f"test_{name}": value for name, value in scores.items()})
    tracking.set_tags({"headline_metric": f"test_{headline}"})  # what sweeps and pipeline.compare rank by
    tracking.log_figure(figure, "plots/test_predictions.png")
    if cm is not None:
        tracking.log_figure(viz.confusion_matrix_figure(cm, classes), "plots/confusion_matrix.png")
    log.info("test %s: %.4f", headline, scores[headline])
    return scores[headline]


@hydra.main(version_base="1.3", config_path=conf_dir(), config_name="config")
@stage
def main(cfg: DictConfig) -> float:
    # first: collective ops need a fresh TensorFlow runtime, before validate()'s dry build of the model
    dist = configure_distribution(cfg.trainer.strategy, cfg.trainer.memory_growth)
    validate(cfg)
    precision = configure_runtime(cfg.seed, cfg.trainer.precision, cfg.trainer.deterministic)
    task = cfg.data.get("task", "segmentation")
    root = prepare_data(cfg.data)
    classes = class_names(cfg.data, root)
    bad_files = BadFiles(cfg.data.get("on_bad_file", "error"))
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = (
        load_data(cfg.data, root, s, bad_files) for s in ("train", "val", "test")
    )
    for split, targets in (("train", y_train), ("val", y_val), ("test", y_test)):
        check_targets(targets, classes, task, split, cfg.data.name)
    with dist.scope():  # variables mirrored on every replica
        model = build_model(cfg.model.name, x_train.shape[1:], len(classes), **model_options(cfg.model))
    checkpoints = Checkpoints(resume_dir(cfg, dist.worker), cfg.trainer.resume)
    augment = build_augmentation(cfg.augment.train, seed=cfg.seed)
    outputs, batch = len(model.outputs), dist.global_batch(cfg.trainer.batch_size)
    train_batches = ImageBatches(
        x_train, y_train, batch, augment, True, cfg.seed, outputs=outputs, first_epoch=checkpoints.done_epochs
    )
    val_batches = ImageBatches(x_val, y_val, batch, outputs=outputs)
    with dist.scope():
        optimizer_cfg = OmegaConf.to_container(cfg.optimizer, resolve=True)
        optimizer_cfg["lr"] = dist.scaled_lr(optimizer_cfg["lr"], cfg.trainer.lr_scaling)
        optimizer = build_optimizer(steps_per_epoch=len(train_batches), epochs=cfg.trainer.epochs, **optimizer_cfg)
        monitor = compile_for_task(model, task, cfg, optimizer, len(classes))
    output_dir = Path(HydraConfig.get().runtime.output_dir)
    best_path = output_dir / "checkpoints" / "best.keras"
    # the config's name (vgg11) rather than its builder's (convnet), so the zoo compares cleanly
    model_choice = HydraConfig.get().runtime.choices.get("model", cfg.model.name)
    tags = {"stage": "train", "task": task, "model": model_choice, "builder": cfg.model.name, "data": cfg.data.name}
    tags["precision"] = precision  # what trainer.precision=auto chose on this machine
    tags.update(sweep.job_tags())

    # only the chief records into the shared store; other workers keep a local one, so a run is logged once
    uri, artifacts = cfg.tracking.uri, cfg.tracking.artifact_root
    if not dist.is_chief:
        uri, artifacts = f"sqlite:///{output_dir}/worker{dist.worker}-mlflow.db", str(output_dir / "mlartifacts")
    with tracking.run(
        uri,
        cfg.tracking.experiment,
        cfg.tracking.run_name,
        artifacts,
        tags,
        parent_run_id=sweep.parent_run_id() if dist.is_chief else None,  # a multirun job nests under its sweep
        run_id=checkpoints.run_id,
    ) as active:
        if not checkpoints.resuming:  # a resumed run has its params, config, data and counts already
            tracking.log_params(OmegaConf.to_container(cfg, resolve=True))
            checksum = (read_manifest(root) or {}).get("checksum")  # generated sets carry a sha256 manifest
            for split, (x, y) in (("train", (x_train, y_train)), ("val", (x_val, y_val)), ("test", (x_test, y_test))):
                tracking.log_dataset(cfg.data.name, str(root.resolve()), split, x, y, checksum)
            tracking.log_dir(output_dir / ".hydra", "config")
            tracking.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config/resolved.yaml")
            flops = sum(layer_flops(layer) for layer in model.layers) / 1e9
            skipped = len(bad_files.skipped)  # data.on_bad_file=skip
            tracking.log_metrics({"num_params": model.count_params(), "gflops": flops, "skipped_files": skipped})
            if bad_files.skipped:
                listing = "".join(f"{path}: {reason}\n" for path, reason in bad_files.skipped.items())
                tracking.log_text(listing, "data/skipped_files.txt")
        checkpoints.start(active.info.run_id)
        model.fit(
            train_batches,
            validation_data=val_batches,
            epochs=cfg.trainer.epochs,
            verbose=cfg.trainer.verbose,
            shuffle=False,  # ImageBatches shuffles, by (seed, epoch), so a resumed run sees the same batches
            callbacks=[
                StopOnNonFiniteLoss(cfg.optimizer.lr, checkpoints.folder),
                Throughput(len(x_train)),  # before the callbacks that record each epoch's logs
                *checkpoints.callbacks(monitor),
                tracking.MetricsCallback(),
            ],
        )
        checkpoints.keep_best(best_path)
        model = keras.models.load_model(best_path)  # evaluate the best epoch, not the last
        headline = test_and_log(model, task, cfg, x_test, y_test, classes, model_choice)
        tracking.log_figure(viz.training_curves(checkpoints.history()), "plots/training_curves.png")
        if cfg.tracking.log_model:
            tracking.log_keras_model(model, x_test[:2].astype(np.float32))
    checkpoints.discard()  # the run is complete: nothing left to resume
    return headline


if __name__ == "__main__":
    main()
