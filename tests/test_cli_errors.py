"""Bad overrides fail at once with one line naming the key and what is valid, and record no run."""

import mlflow
import pytest

from conftest import TINY, run_stage


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("model.base_filters=-4", "model.base_filters=-4 is invalid: must be an integer >= 1"),
        (
            "model.name=resnet9000",
            "model.name='resnet9000' is unknown; valid: alexnet, convnet, googlenet, lenet5, localizer, mlp",
        ),
        ("model.depth=6", "cannot pass layer encoder6_pool"),  # 32 px images cannot be pooled 6 times
        ("model.dropout=high", "model.dropout='high' is invalid: must be a number"),
        ("+model.kernel=3", "model.kernel is not an option of unet; valid: depth, base_filters"),
        ("optimizer.lr=-0.1", "optimizer.lr=-0.1 is invalid: must be a number > 0"),
        ("optimizer.name=adagrad", "optimizer.name='adagrad' is unknown; valid: adam, adamw, sgd"),
        ("trainer.epochs=0", "trainer.epochs=0 is invalid: must be a positive integer"),
        ("trainer.precision=float8", "trainer.precision='float8' is unknown"),
        ("augment.train=[{name:Blurr}]", "augment.train[0].name='Blurr' is not an albumentations transform"),
    ],
)
def test_bad_override_fails_with_one_line(project, override, expected):
    result = run_stage("train", project, *TINY, override)
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and expected in errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    # nothing half-done is left behind in the store
    mlflow.set_tracking_uri(f"sqlite:///{project}/mlflow.db")
    assert all(
        r.info.status != "RUNNING" for r in mlflow.search_runs(search_all_experiments=True, output_format="list")
    )


def test_unknown_config_group_option_lists_valid_ones(project):
    result = run_stage("train", project, "model=resnet9000")
    assert result.returncode != 0
    assert "Could not find 'model/resnet9000'" in result.stderr and "unet" in result.stderr


def test_misspelt_key_is_refused_by_hydra_with_its_full_name(project):
    result = run_stage("train", project, "model.widht=3")
    assert result.returncode != 0
    assert "Could not override 'model.widht'" in result.stderr and "Key 'widht' is not in struct" in result.stderr


def test_cfg_job_prints_resolved_config(project):
    result = run_stage("train", project, "optimizer.lr=1e-4", "--cfg", "job", "--resolve")
    assert result.returncode == 0, result.stderr
    assert "lr: 0.0001" in result.stdout
    assert f"root: {project}" in result.stdout
