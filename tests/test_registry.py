"""The model registry: a run's model registered by the register stage, then used by alias or version."""

import re

import pytest
from mlflow.tracking import MlflowClient

from helpers import run_here


@pytest.fixture(scope="module")
def registered(lenet5_digits):
    project, client, run = lenet5_digits
    result = run_here("register", project, f"source={run.info.run_id}", "name=digits-lenet5", "alias=champion")
    assert result.returncode == 0, result.stderr[-3000:]
    return project, client, run, result.stdout


def test_register_makes_a_version_under_the_alias(registered):
    project, client, run, printed = registered
    version = client.get_model_version_by_alias("digits-lenet5", "champion")
    assert version.run_id == run.info.run_id and str(version.version) == "1"
    assert "models:/digits-lenet5/1" in printed and "models:/digits-lenet5@champion" in printed


def test_evaluate_by_alias_reproduces_the_runs_test_metric(registered):
    project, client, run, _ = registered
    result = run_here("evaluate", project, "source=models:/digits-lenet5@champion")
    assert result.returncode == 0, result.stderr[-3000:]
    # the session's LeNet-5 run is evaluated by other test files too: this evaluation is the one by alias
    by_alias = "tags.stage = 'evaluate' and tags.source = 'models:/digits-lenet5@champion'"
    [evaluation] = client.search_runs([run.info.experiment_id], by_alias)
    assert abs(evaluation.data.metrics["test_accuracy"] - run.data.metrics["test_accuracy"]) < 1e-9


def test_the_model_card_prints_by_alias_with_its_test_interval_and_classes(registered):
    project, client, run, _ = registered
    result = run_here("card", project, "source=models:/digits-lenet5@champion", "refresh=false")
    assert result.returncode == 0, result.stderr[-3000:]
    card, metrics = result.stdout, run.data.metrics
    assert card.startswith("# Model card: lenet5 (classification)") and run.info.run_id in card
    low, high = metrics["test_accuracy_ci_low"], metrics["test_accuracy_ci_high"]
    assert low <= metrics["test_accuracy"] <= high
    assert f"test_accuracy = {metrics['test_accuracy']:.4f} (95 % bootstrap interval" in card
    assert f"{low:.4f}..{high:.4f}" in card and f"{int(metrics['test_images'])} images" in card
    assert f"| 7 | {metrics['test_precision_7']:.4f} | {metrics['test_recall_7']:.4f} |" in card
    logged = client.download_artifacts(run.info.run_id, "model_card.md", str(project / "card-alias"))
    assert open(logged).read().startswith("# Model card: lenet5")  # logged by the training run itself


def test_a_version_names_the_same_model_and_run(registered):
    from pipeline.tracking import load_model

    project, _, run, _ = registered
    model, source_run = load_model("models:/digits-lenet5/1", f"sqlite:///{project}/mlflow.db")
    assert source_run == run.info.run_id and model.count_params() > 0


@pytest.mark.parametrize(
    "source, message",
    [
        ("models:/digits-lenet5@nope", "model 'digits-lenet5' has no alias 'nope'; its aliases: champion (version 1)"),
        ("models:/digits-lenet5/7", "model 'digits-lenet5' has no version '7'; its versions: 1"),
        ("models:/no-such-model@champion", "no registered model named 'no-such-model'; registered: digits-lenet5"),
    ],
)
def test_a_source_that_names_nothing_says_what_exists(registered, source, message):
    from pipeline.errors import DataError
    from pipeline.tracking import load_model

    project = registered[0]
    with pytest.raises(DataError, match=re.escape(message)):
        load_model(source, f"sqlite:///{project}/mlflow.db")


def test_a_missing_alias_is_one_line_from_the_command_line(registered):
    result = run_here("evaluate", registered[0], "source=models:/digits-lenet5@nope")
    last = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 2 and last.startswith("error: source='models:/digits-lenet5@nope'"), last
    assert "Traceback" not in result.stderr


def test_a_bad_alias_leaves_the_registry_as_it_was(registered):
    project, client, run, _ = registered
    result = run_here("register", project, f"source={run.info.run_id}", "name=digits-lenet5", "alias=v2")
    assert result.returncode == 2 and "alias='v2' is invalid" in result.stderr.strip().splitlines()[-1]
    assert [str(v.version) for v in client.search_model_versions("name = 'digits-lenet5'")] == ["1"]
    result = run_here("register", project, "source=0123456789abcdef", "name=digits-lenet5")
    assert result.returncode == 2 and "source='0123456789abcdef'" in result.stderr.strip().splitlines()[-1]
    versions = MlflowClient(client.tracking_uri).search_model_versions("name = 'digits-lenet5'")
    assert [str(v.version) for v in versions] == ["1"]
