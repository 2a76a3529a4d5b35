"""Transfer learning: what each strategy freezes, local keras.applications weights, runs as sources."""

import keras
import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient

from helpers import find_runs, run_here
from pipeline.config import conf_dir
from pipeline.config.schema import check_schema
from pipeline.config.spec import spec
from pipeline.errors import ConfigError, DataError
from pipeline.models import build_model
from pipeline.models.backbone_unet import backbone_unet, unet_backbone
from pipeline.models.backbones import (
    application,
    block_of,
    blocks,
    classifier_backbone,
    feature_map_backbone,
    set_trainable,
    skip_layers,
    transfer_classifier,
)
from pipeline.training.job import Job
from pipeline.training.recipe import Built, Phase
from pipeline.training.runtime import configure_distribution, configure_runtime
from pipeline.training.transfer import phases

MOBILENET = {"include_top": False, "weights": None, "input_shape": (32, 32, 3), "alpha": 0.35}


def snapshot(model: keras.Model) -> dict[str, list[np.ndarray]]:
    """Every layer's weights (batch norm's moving statistics included), by layer name."""
    return {layer.name: [np.array(w) for w in layer.get_weights()] for layer in model.layers if layer.weights}


def changed(before: dict, after: dict) -> set[str]:
    return {name for name in before if any(not np.array_equal(a, b) for a, b in zip(before[name], after[name]))}


def train(strategy: str, compose_config, tmp_path, epochs: int = 2, warmup: int = 1, stop_after=None, *more):
    """A batch-normed convnet's backbone reused on 16 digits by `strategy`, trained through the train stage's Job
    (its transfer phases); the backbone's weights before and after, and the run. With `stop_after`, Ctrl-C
    at the end of that epoch (after its backup)."""
    made = {}

    def factory(cfg, shape, num_classes):  # pipeline.training.transfer.factory, with an in-memory source
        source = build_model("convnet", shape, 3, n=1, m=3, filters=4, batch_norm=True, fc_units=8)
        made["backbone"] = backbone = classifier_backbone(source)
        made["before"] = snapshot(backbone)
        model = transfer_classifier(backbone, num_classes, backbone_training=None if strategy == "scratch" else False)
        return Built(model, phases(strategy, epochs, warmup, 0.05, 1.0, fine_tune_blocks=2), backbone, keep="last")

    overrides = ["data=digits", "data.classes=[0,1]", "data.k_per_class=8", f"paths.root={tmp_path}", f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
                 f"trainer.epochs={epochs}", "trainer.batch_size=8", "trainer.verbose=0", "optimizer=adam",
                 "optimizer.lr=0.05", "optimizer.schedule=constant", "augment=none", "tracking.log_model=false",
                 "tracking.num_examples=0", "tracking.system_metrics=null", "model=lenet5", *more]  # fmt: skip
    cfg = spec(compose_config(overrides))
    configure_runtime(cfg.seed, "float32", deterministic=True)
    job = Job(cfg, configure_distribution("auto"), tmp_path, factory=factory)
    if stop_after is not None:
        job.extra_callbacks.append(
            keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: interrupt(e, stop_after))
        )
    job.record({"stage": "transfer"}, {}, "transfer")
    client = MlflowClient(cfg.tracking.uri)
    [run] = client.search_runs([client.get_experiment_by_name("digits").experiment_id])
    return made["backbone"], made["before"], snapshot(made["backbone"]), run


def interrupt(epoch: int, stop_after: int) -> None:
    if epoch + 1 == stop_after:
        raise KeyboardInterrupt


def test_blocks_group_layers_by_name_prefix():
    names = ["stage2_conv1", "block_16_project", "conv5_block3_2_conv", "C5", "Conv_1", "block7a_se_reduce"]
    assert [block_of(n) for n in names] == ["stage2", "block_16", "conv5", "C5", "Conv_1", "block7a"]
    backbone = classifier_backbone(build_model("convnet", (16, 16, 1), 3, n=1, m=3, filters=4, batch_norm=True))
    assert list(blocks(backbone)) == ["stage1", "stage2", "stage3", "fc1"]  # batch norm layers aside


def test_feature_extraction_leaves_every_backbone_weight_unchanged(compose_config, tmp_path):
    backbone, before, after, _ = train("feature_extraction", compose_config, tmp_path)
    assert changed(before, after) == set()
    assert any(name.endswith("bn1") for name in before)  # ... including batch norm's moving statistics


def test_fine_tune_changes_only_the_top_blocks(compose_config, tmp_path):
    backbone, before, after, _ = train("fine_tune", compose_config, tmp_path)
    assert changed(before, after) == {"stage3_conv1", "fc1"}  # the top 2 blocks; their batch norm stays frozen


def test_scratch_trains_everything_including_batch_norm(compose_config, tmp_path):
    backbone, before, after, _ = train("scratch", compose_config, tmp_path, epochs=1)
    assert changed(before, after) == set(before)


@pytest.mark.parametrize("stop_after", [1, 2], ids=["at-the-phase-boundary", "inside-the-second-phase"])
def test_a_fine_tune_stopped_in_any_phase_resumes_to_the_uninterrupted_result(compose_config, tmp_path, stop_after):
    """Each phase keeps its own backup (its own optimizer): stopped after the warm-up phase or inside the
    fine-tuning, trainer.resume=true continues the same run to the scores of a run never stopped."""
    *_, whole = train("fine_tune", compose_config, tmp_path / "whole", 3, 1)
    with pytest.raises(KeyboardInterrupt):
        train("fine_tune", compose_config, tmp_path / "stopped", 3, 1, stop_after)
    *_, resumed = train("fine_tune", compose_config, tmp_path / "stopped", 3, 1, None, "trainer.resume=true")
    assert resumed.info.status == "FINISHED"
    client = MlflowClient(f"sqlite:///{tmp_path}/stopped/mlflow.db")
    assert [m.step for m in client.get_metric_history(resumed.info.run_id, "val_loss")] == [0, 1, 2]
    assert [(m.step, m.value) for m in client.get_metric_history(resumed.info.run_id, "unfrozen_blocks")] == [
        (0, 0.0),
        (1, 2.0),
    ]
    for key in ("val_loss", "test_accuracy", "loss"):
        assert resumed.data.metrics[key] == pytest.approx(whole.data.metrics[key], abs=1e-5), key


def test_warmup_must_leave_epochs_to_fine_tune():
    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        cfg = compose(
            "transfer",
            ["transfer.source=MobileNetV2", "transfer.strategy=full", "trainer.epochs=3", "transfer.warmup_epochs=3"],
        )
    with pytest.raises(ConfigError, match=r"^transfer.warmup_epochs=3 is invalid for full: must be in 1..trainer"):
        check_schema(cfg)  # before TensorFlow loads
    with pytest.raises(ValueError, match="warmup_epochs=3 leaves no epoch of 3"):
        phases("full", 3, 3, 1e-3, 0.1, 2)
    assert phases("fine_tune", 10, 4, 1e-3, 0.1, 2) == [Phase(4, 1e-3, 0), Phase(6, pytest.approx(1e-4), 2)]


def test_keras_application_backbone_loads_a_local_weights_file(tmp_path):
    saved = keras.applications.MobileNetV2(**MOBILENET)
    path = tmp_path / "mobilenet_v2_035.weights.h5"
    saved.save_weights(path)
    backbone = application("MobileNetV2", (32, 32, 1), weights=str(path), alpha=0.35)  # grey images
    for name in ("Conv1", "block_16_project", "Conv_1"):
        for loaded, original in zip(backbone.get_layer(name).get_weights(), saved.get_layer(name).get_weights()):
            np.testing.assert_array_equal(loaded, original)
    unfrozen = set_trainable(backbone, 1)
    assert unfrozen == ["Conv_1"] and not backbone.get_layer("Conv_1_bn").trainable
    model = transfer_classifier(backbone, 3)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    loss = model.train_on_batch(np.zeros((4, 32, 32, 1), np.float32), np.array([0, 1, 2, 0]))
    assert np.isfinite(loss)


def test_missing_weights_file_names_the_file_and_the_backbone(tmp_path):
    missing = tmp_path / "nowhere.weights.h5"
    with pytest.raises(DataError) as err:
        application("MobileNetV2", (32, 32, 3), weights=str(missing), alpha=0.35)
    assert f"transfer.weights={missing}: file not found" in str(err.value)
    assert "expected weights of MobileNetV2(include_top=False, alpha=0.35, input 32x32x3)" in str(err.value)


def test_weights_of_another_network_are_refused_naming_both(tmp_path):
    wider = tmp_path / "mobilenet_v2_050.weights.h5"
    keras.applications.MobileNetV2(**{**MOBILENET, "alpha": 0.5}).save_weights(wider)
    with pytest.raises(DataError) as err:
        application("MobileNetV2", (32, 32, 3), weights=str(wider), alpha=0.35)
    assert f"transfer.weights={wider}: does not fit MobileNetV2(include_top=False, alpha=0.35" in str(err.value)


def test_missing_weights_file_through_the_cli_exits_2(project):
    result = run_here(
        "transfer",
        project,
        "data=digits",
        "trainer=debug",
        "transfer.source=MobileNetV2",
        "transfer.alpha=0.35",
        f"transfer.weights={project}/missing.weights.h5",
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"error: transfer.weights={project}/missing.weights.h5: file not found" in result.stderr
    assert "Traceback" not in result.stderr


def test_unet_on_a_frozen_mobilenet_trains_one_step_and_keeps_the_encoder(compose_config, tmp_path):
    from pipeline.data.sources import load_data, prepare_data

    cfg = compose_config(["trainer=debug", f"paths.root={tmp_path}"])  # 16 shapes images of 32x32
    images, masks = load_data(cfg.data, prepare_data(cfg.data, progress=False), "train")
    model = unet_backbone(images.shape[1:], 4, alpha=0.35, freeze_encoder=True)
    assert model.output.shape[1:] == (32, 32, 4)
    encoder = model.get_layer("encoder")
    assert [o.shape[1] for o in encoder.outputs] == [16, 8, 4, 2, 1]  # skips at strides 2..16, then the output
    before = snapshot(encoder)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    assert np.isfinite(model.train_on_batch(images[:4].astype(np.float32), masks[:4]))
    assert changed(before, snapshot(encoder)) == set()


def test_unet_on_a_trained_classifier_takes_its_stage_outputs_as_skips():
    classifier = build_model("convnet", (32, 32, 3), 3, n=1, m=3, filters=4)
    encoder = feature_map_backbone(classifier)
    # the last map at strides 2 and 4, before each pooling, as in U-Net; stage3_pool (stride 8) is the output
    assert skip_layers(encoder) == ["stage2_relu1", "stage3_relu1"]
    assert backbone_unet(encoder, 4).output.shape[1:] == (32, 32, 4)
    with pytest.raises(ConfigError, match="cannot feed a U-Net"):
        skip_layers(feature_map_backbone(build_model("lenet5", (32, 32, 1), 3)))  # unpadded 5x5 convs


@pytest.mark.slow
def test_a_run_is_a_source_and_the_study_summarises_its_sweep(project):
    tiny = ["data.per_class=12", "trainer.verbose=0"]
    result = run_here("train", project, "experiment=transfer_source", "trainer.epochs=1", *tiny)
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{project}/mlflow.db")
    [source] = find_runs(client, "transfer_source")
    result = run_here(
        "transfer",
        project,
        "experiment=transfer_study",
        f"transfer.source={source.info.run_id}",
        "transfer.strategy=scratch,fine_tune",
        "data.k_per_class=2,null",
        "seed=1",
        "trainer.epochs=2",
        "transfer.warmup_epochs=1",
        *tiny,
        "--multirun",  # after the overrides: argparse takes them as one list
    )
    assert result.returncode == 0, result.stderr[-3000:]
    study = client.get_experiment_by_name("transfer_study").experiment_id
    runs = client.search_runs([study], "tags.stage = 'transfer'")  # not the sweep's parent run
    assert len(runs) == 4 and {r.data.tags["source_run"] for r in runs} == {source.info.run_id}
    assert {(r.data.tags["strategy"], r.data.tags["k_per_class"]) for r in runs} == {
        ("scratch", "2"),
        ("scratch", "all"),
        ("fine_tune", "2"),
        ("fine_tune", "all"),
    }
    k2 = [r for r in runs if r.data.tags["k_per_class"] == "2"]
    assert {r.data.metrics["train_images"] for r in k2} == {20.0}  # 2 images of each of the 10 digits

    result = run_here("transfer_study", project, f"figure={project}/study.png")
    assert result.returncode == 0, result.stderr[-3000:]
    [parent] = client.search_runs([study], "tags.stage = 'sweep'")  # one run: the sweep, its children, its study
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"table.md", "table.csv", "summary", "plots"} <= artifacts and (project / "study.png").is_file()
    assert parent.data.tags["transfer_study"] == "true" and parent.data.metrics["transfer_study_runs"] == 4
    children = client.search_runs([study], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(children) == 4 and {r.data.tags["stage"] for r in children} == {"transfer"}


@pytest.mark.slow
def test_segmentation_fine_tunes_a_unet_on_a_local_mobilenet_through_the_cli(project):
    weights = project / "mobilenet_v2_035.weights.h5"
    keras.applications.MobileNetV2(**MOBILENET).save_weights(weights)
    result = run_here(
        "transfer",
        project,
        "data=shapes",
        "trainer=debug",
        "trainer.epochs=2",
        "trainer.verbose=0",
        "tracking.num_examples=2",
        "transfer.source=MobileNetV2",
        "transfer.alpha=0.35",
        f"transfer.weights={weights}",
        "transfer.strategy=fine_tune",
        "transfer.warmup_epochs=1",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{project}/mlflow.db")
    [run] = find_runs(client, "shapes")
    assert run.data.tags["task"] == "segmentation" and run.data.tags["strategy"] == "fine_tune"
    assert 0.0 <= run.data.metrics["test_mean_iou"] <= 1.0
    history = client.get_metric_history(run.info.run_id, "unfrozen_blocks")
    assert [(m.step, m.value) for m in history] == [(0, 0.0), (1, 2.0)]  # head warm-up, then the top 2 blocks
