"""Transfer stage: the lecture's recipe — train on a large set, then reuse the network on a small one.

    python -m pipeline.transfer transfer.source=<run id> transfer.strategy=feature_extraction
    python -m pipeline.transfer transfer.source=MobileNetV2 transfer.weights=mnv2.weights.h5 transfer.alpha=0.35
    python -m pipeline.transfer -m experiment=transfer_study          # strategy x k, then pipeline.transfer_study

Strategies, all with the same epoch budget (trainer.epochs):
  scratch             the source's architecture, freshly initialised, everything trained
  feature_extraction  the backbone frozen (inference mode), only a new head trained
  fine_tune           head warm-up, then the top `fine_tune_blocks` blocks too, at lr x lr_factor
  full                head warm-up, then the whole backbone, at lr x lr_factor
Batch norm in a reused backbone always runs in inference mode. The last epoch is scored (no
checkpoint picked on a validation set that may be larger than the training set).
"""

import logging
from pathlib import Path

import hydra
import keras
import numpy as np
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from pipeline import tracking, viz
from pipeline.config import conf_dir, positive_int, positive_number, require, stage
from pipeline.data.augment import build_augmentation
from pipeline.data.sequence import ImageBatches
from pipeline.errors import ConfigError
from pipeline.models.backbone_unet import backbone_unet
from pipeline.models.backbones import (
    APPLICATIONS,
    application,
    classifier_backbone,
    feature_map_backbone,
    set_trainable,
    transfer_classifier,
)
from pipeline.prepare import class_names, load_data, prepare_data
from pipeline.train import task_loss, test_and_log
from pipeline.training import build_optimizer, configure_runtime
from pipeline.validation import check_schema

log = logging.getLogger(__name__)
STRATEGIES = ("scratch", "feature_extraction", "fine_tune", "full")


def phases(
    strategy: str, epochs: int, warmup_epochs: int, lr: float, lr_factor: float, fine_tune_blocks: int
) -> list[tuple[int, float, int | None]]:
    """(epochs, learning rate, top blocks trainable; None: all) of each training phase."""
    if strategy not in STRATEGIES:
        raise ConfigError(f"transfer.strategy={strategy!r} is unknown; valid: {', '.join(STRATEGIES)}")
    if strategy == "scratch":
        return [(epochs, lr, None)]
    if strategy == "feature_extraction":
        return [(epochs, lr, 0)]
    if not 0 < warmup_epochs < epochs:
        raise ConfigError(
            f"transfer.warmup_epochs={warmup_epochs} is invalid for {strategy}: must be in 1..trainer.epochs-1 "
            f"(trainer.epochs={epochs})"
        )
    top = fine_tune_blocks if strategy == "fine_tune" else None
    return [(warmup_epochs, lr, 0), (epochs - warmup_epochs, lr * lr_factor, top)]


def load_backbone(
    source: str, task: str, input_shape: tuple, uri: str, fresh: bool, weights: str | None, alpha: float | None
) -> tuple[keras.Model, str | None]:
    """The source's backbone (its run id, if a run): a keras.applications name or anything
    tracking.load_model takes. fresh=True: the same architecture, newly initialised (scratch)."""
    if source in APPLICATIONS:
        return application(source, input_shape, None if fresh else weights, alpha), None
    if source.startswith("latest:"):  # the newest finished run of an experiment, e.g. latest:transfer_source
        source = tracking.latest_run_id(uri, source.removeprefix("latest:"))
    model, run_id = tracking.load_model(source, uri)
    backbone = feature_map_backbone(model) if task == "segmentation" else classifier_backbone(model)
    expected = tuple(backbone.inputs[0].shape[1:])
    if tuple(input_shape) != expected:
        raise ConfigError(
            f"transfer.source={source}: its model takes {expected} images but the data gives {tuple(input_shape)}; "
            "set data.image_size (and data.channels) to match"
        )
    return (keras.models.clone_model(backbone) if fresh else backbone), run_id


def build_transfer_model(
    backbone: keras.Model, task: str, num_classes: int, strategy: str, head_dropout: float, base_filters: int
) -> keras.Model:
    """A new head on the backbone: a softmax classifier, or a U-Net decoder for segmentation."""
    training = None if strategy == "scratch" else False  # a reused backbone keeps its batch norm statistics
    if task == "segmentation":
        return backbone_unet(backbone, num_classes, base_filters, encoder_training=training)
    if task != "classification":
        raise ConfigError(f"data.task={task!r}: the transfer stage handles classification and segmentation")
    return transfer_classifier(backbone, num_classes, training, head_dropout)


def fit_phases(
    model: keras.Model,
    backbone: keras.Model,
    schedule: list[tuple[int, float, int | None]],
    compile_model,
    train_batches,
    val_batches,
    optimizer_cfg: dict,
    verbose,
) -> dict[str, list[float]]:
    """Train phase by phase (recompiling after each change of what is trainable); one joined history."""
    history, start = {}, 0
    for epochs, lr, top_blocks in schedule:
        unfrozen = set_trainable(backbone, top_blocks)
        trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
        log.info(
            "epochs %d-%d at lr %.2g: %d trainable weights, backbone blocks %s",
            start + 1,
            start + epochs,
            lr,
            trainable,
            unfrozen,
        )
        tracking.log_metrics({"trainable_params": trainable, "unfrozen_blocks": len(unfrozen)}, step=start)
        options = {**optimizer_cfg, "lr": lr}
        compile_model(build_optimizer(steps_per_epoch=len(train_batches), epochs=epochs, **options))
        phase = model.fit(
            train_batches,
            validation_data=val_batches,
            initial_epoch=start,
            epochs=start + epochs,
            verbose=verbose,
            callbacks=[tracking.MetricsCallback()],
        ).history
        for key, values in phase.items():
            history.setdefault(key, []).extend(values)
        start += epochs
    return history


def validate_transfer(cfg: DictConfig) -> None:
    check_schema(cfg)  # not the train stage's model checks: the model here comes from transfer.source
    require(
        cfg,
        "transfer.source",
        lambda v: isinstance(v, str) and v != "",
        f"a run id, a model URI or file, latest:<experiment>, or one of {', '.join(APPLICATIONS)}",
    )
    require(cfg, "transfer.strategy", lambda v: v in STRATEGIES, f"one of {', '.join(STRATEGIES)}")
    require(cfg, "transfer.fine_tune_blocks", positive_int, "a positive integer")
    require(cfg, "transfer.warmup_epochs", lambda v: isinstance(v, int) and v >= 0, "an integer >= 0")
    require(cfg, "transfer.lr_factor", positive_number, "a number > 0")
    require(cfg, "transfer.head_dropout", lambda v: 0 <= v < 1, "a number in [0, 1)")


@hydra.main(version_base="1.3", config_path=conf_dir(), config_name="transfer")
@stage
def main(cfg: DictConfig) -> float:
    validate_transfer(cfg)
    keras.utils.clear_session()  # a multirun runs its jobs in one process
    configure_runtime(cfg.seed, cfg.trainer.precision, cfg.trainer.deterministic)
    t, task = cfg.transfer, cfg.data.get("task", "segmentation")
    root = prepare_data(cfg.data, progress=False)
    classes = class_names(cfg.data, root)
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = (
        load_data(cfg.data, root, s) for s in ("train", "val", "test")
    )
    schedule = phases(
        t.strategy, cfg.trainer.epochs, t.warmup_epochs, cfg.optimizer.lr, t.lr_factor, t.fine_tune_blocks
    )
    backbone, source_run = load_backbone(
        str(t.source), task, x_train.shape[1:], cfg.tracking.uri, t.strategy == "scratch", t.weights, t.alpha
    )
    model = build_transfer_model(backbone, task, len(classes), t.strategy, t.head_dropout, t.base_filters)
    loss, metrics, _ = task_loss(task, cfg.loss, len(classes))

    def compile_model(optimizer):
        model.compile(optimizer=optimizer, loss=loss, metrics=metrics, jit_compile=cfg.trainer.jit_compile)

    augment = build_augmentation(cfg.augment.train, seed=cfg.seed)
    train_batches = ImageBatches(x_train, y_train, cfg.trainer.batch_size, augment, True, cfg.seed)
    val_batches = ImageBatches(x_val, y_val, cfg.trainer.batch_size)
    k = cfg.data.get("k_per_class")
    tags = {
        "stage": "transfer",
        "task": task,
        "data": cfg.data.name,
        "strategy": t.strategy,
        "source": str(t.source),
        "k_per_class": str(k if k is not None else "all"),
    }
    if source_run:
        tags["source_run"] = source_run
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode == RunMode.MULTIRUN:  # lets pipeline.transfer_study find the runs of one sweep
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
        history = fit_phases(
            model,
            backbone,
            schedule,
            compile_model,
            train_batches,
            val_batches,
            OmegaConf.to_container(cfg.optimizer, resolve=True),
            cfg.trainer.verbose,
        )
        headline = test_and_log(model, task, cfg, x_test, y_test, classes, t.strategy)
        tracking.log_figure(viz.training_curves(history), "plots/training_curves.png")
        if cfg.tracking.log_model:
            tracking.log_keras_model(model, x_test[:2].astype(np.float32))
    return headline


if __name__ == "__main__":
    main()
