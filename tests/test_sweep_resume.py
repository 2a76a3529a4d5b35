"""A sweep is its folder: killed part-way (the launching process SIGKILLed) and started again on the same
folder, it finishes the jobs that did not finish, runs none twice, and keeps one parent run."""

import os
import signal
import subprocess
import sys
import time

import pytest
from mlflow.tracking import MlflowClient

from helpers import run_stage

pytestmark = pytest.mark.slow

TINY = ["trainer=debug", "trainer.epochs=1", "model.depth=2", "data.splits.train=32", "tracking.log_model=false",
        "tracking.num_examples=1", "trainer.verbose=0"]  # fmt: skip


def children(client, experiment, parent=None):
    runs = client.search_runs([experiment], "tags.stage = 'train'")
    return [r for r in runs if parent is None or r.data.tags.get("mlflow.parentRunId") == parent]


def launch_and_kill(command: list[str], env: dict, client: MlflowClient, enough: int) -> list:
    """Start a multirun, SIGKILL its whole process group once `enough` child runs FINISHED (as a node that
    vanished: no atexit, no callback); the FINISHED runs at that moment."""
    launcher = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)  # fmt: skip
    deadline, finished = time.monotonic() + 600, []
    while len(finished) < enough and launcher.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
        if experiment := client.get_experiment_by_name("shapes"):
            finished = [r for r in children(client, experiment.experiment_id) if r.info.status == "FINISHED"]
    os.killpg(launcher.pid, signal.SIGKILL)
    launcher.wait()
    return finished


def test_a_killed_grid_sweep_on_submitit_resumes_on_its_folder(tmp_path):
    """hydra/launcher=submitit_local: every job its own process (as on SLURM), the launcher killed, resumed. The
    grid's lr axis with one width: three jobs."""
    project, folder = tmp_path, tmp_path / "outputs" / "multirun" / "grid"
    uri = f"sqlite:///{project}/mlflow.db"
    grid = ["sweep=grid", "optimizer.lr=1e-3,3e-3,1e-2", "model.base_filters=4"]
    args = [*grid, "hydra/launcher=submitit_local", *TINY, f"hydra.sweep.dir={folder}", "--multirun"]
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "HYDRA_FULL_ERROR": "0"}
    command = [sys.executable, "-m", "pipeline.commands.train", f"paths.root={project}", *args]
    client = MlflowClient(uri)
    finished = launch_and_kill(command, env, client, enough=1)
    experiment = client.get_experiment_by_name("shapes").experiment_id
    before = {r.info.run_id: r for r in children(client, experiment) if r.info.status == "FINISHED"}
    assert 1 <= len(before) < 3, "the kill came too late to leave unfinished jobs"
    [parent] = client.search_runs([experiment], "tags.stage = 'sweep'")
    assert parent.info.status == "RUNNING"  # the SIGKILL left it so

    changed = run_stage("train", project, *args[:-1], "model.depth=3", "-m")
    assert changed.returncode == 2
    assert (
        changed.stderr.strip()
        .splitlines()[-1]
        .startswith(f"error: hydra.sweep.dir={folder} holds a sweep with other settings: model.depth differ")
    ), changed.stderr[-2000:]

    resumed = run_stage("train", project, *args, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    [again] = client.search_runs([experiment], "tags.stage = 'sweep'")
    assert again.info.run_id == parent.info.run_id and again.info.status == "FINISHED"
    assert again.data.tags["resumes"] == "1"
    done = [r for r in children(client, experiment, parent.info.run_id) if r.info.status == "FINISHED"]
    assert len(done) == 3 == len({r.data.tags["overrides"] for r in done})  # one FINISHED child per job
    for run_id, run in before.items():  # and the earlier ones were not run again
        assert client.get_run(run_id).info.end_time == run.info.end_time
    for run in done:
        assert len(client.get_metric_history(run.info.run_id, "val_loss")) == 1  # its epoch, once
    pids = {r.data.tags["system.pid"] for r in done}
    assert len(pids) == 3 and str(os.getpid()) not in pids  # each job in a process of its own
    summary = client.download_artifacts(parent.info.run_id, "summary/summary.csv", str(tmp_path))
    assert len(open(summary).read().strip().splitlines()) == 1 + 3
    assert not [r for r in children(client, experiment) if r.info.status == "RUNNING"]
    assert finished


OPTUNA = ["sweep=optuna", "hydra.sweeper.n_trials=3", "hydra.sweeper.n_jobs=2"]  # killed in its first batch of 2


def test_a_killed_optuna_sweep_resumes_its_study_to_exactly_n_trials(tmp_path):
    import optuna

    project, folder = tmp_path, tmp_path / "outputs" / "multirun" / "tpe"
    uri = f"sqlite:///{project}/mlflow.db"
    args = [*TINY, *OPTUNA, f"hydra.sweep.dir={folder}", "--multirun"]
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "HYDRA_FULL_ERROR": "0"}
    command = [sys.executable, "-m", "pipeline.commands.train", f"paths.root={project}", *args]
    client = MlflowClient(uri)
    finished = launch_and_kill(command, env, client, enough=1)  # mid-batch: done in MLflow, not told to the study
    storage = f"sqlite:///{project}/optuna.db"  # beside mlflow.db: the default
    [summary] = optuna.get_all_study_summaries(storage)
    assert summary.n_trials == 2 and summary.study_name == "multirun/tpe"

    resumed = run_stage("train", project, *args, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    study = optuna.load_study(study_name="multirun/tpe", storage=storage)
    assert len(study.trials) == 3 and all(t.state.name == "COMPLETE" for t in study.trials)
    assert (resumed.stdout + resumed.stderr).count("already FINISHED in run") == len(finished)
    experiment = client.get_experiment_by_name("shapes").experiment_id
    [parent] = client.search_runs([experiment], "tags.stage = 'sweep'")
    assert parent.info.status == "FINISHED" and study.user_attrs["mlflow_parent_run_id"] == parent.info.run_id
    done = [r for r in children(client, experiment, parent.info.run_id) if r.info.status == "FINISHED"]
    assert len(done) == 3 == len({r.data.tags["overrides"] for r in done})
    assert {r.info.run_id for r in finished} <= {r.info.run_id for r in done}  # not trained twice
    values = sorted(r.data.metrics["selection_val_mean_iou"] for r in done)  # what each job returned
    assert values == pytest.approx(sorted(t.value for t in study.trials))  # the study holds what MLflow holds


def test_a_pruned_trial_stops_and_is_recorded_as_pruned(tmp_path):
    """ThresholdPruner(lower=1.1): no IoU reaches it, so the trial is cut once its warm-up epoch is over."""
    import optuna

    pruner = "+hydra.sweeper.pruner={_target_:optuna.pruners.ThresholdPruner,lower:1.1,n_warmup_steps:1}"
    args = [*TINY, "sweep=optuna", "hydra.sweeper.n_trials=1", "trainer.epochs=3", pruner, "--multirun"]
    result = run_stage("train", tmp_path, *args, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.get_experiment_by_name("shapes").experiment_id
    [run] = children(client, experiment)
    assert run.info.status == "KILLED" and run.data.tags["pruned"] == "true"
    assert run.data.tags["pruned_at_epoch"] == "2"
    assert len(client.get_metric_history(run.info.run_id, "val_loss")) == 2  # its epochs so far, then stop
    assert "test_mean_iou" not in run.data.metrics
    [summary] = optuna.get_all_study_summaries(f"sqlite:///{tmp_path}/optuna.db")
    study = optuna.load_study(study_name=summary.study_name, storage=f"sqlite:///{tmp_path}/optuna.db")
    assert [t.state.name for t in study.trials] == ["PRUNED"]
    [parent] = client.search_runs([experiment], "tags.stage = 'sweep'")
    assert parent.data.tags["pruned_children"] == "1" and "unfinished_children" not in parent.data.tags


def test_an_optuna_sweep_whose_trials_fail_stops_in_one_line_and_ends_failed(tmp_path):
    """Every trial fails inside its run (the augmentation resizes the 32 px images to 16 px, which the model
    refuses): both are FAIL in the study, then the sweep exits 2 naming them and its parent run is FAILED."""
    import optuna

    resize = "augment.train=[{name:Resize,height:16,width:16}]"
    args = [*TINY, "sweep=optuna", "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=1", resize, "--multirun"]
    result = run_stage("train", tmp_path, *args, timeout=600)
    assert result.returncode == 2, result.stderr[-4000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: 2 of the 2 trials this sweep ran failed (trials 0, 1; trial 0: Input 0 with name")
    assert "the sweep's parent run ends FAILED" in last
    [summary] = optuna.get_all_study_summaries(f"sqlite:///{tmp_path}/optuna.db")
    study = optuna.load_study(study_name=summary.study_name, storage=f"sqlite:///{tmp_path}/optuna.db")
    assert [t.state.name for t in study.trials] == ["FAIL", "FAIL"]
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.get_experiment_by_name("shapes").experiment_id
    [parent] = client.search_runs([experiment], "tags.stage = 'sweep'")
    assert parent.info.status == "FAILED" and parent.data.tags["unfinished_children"] == "2"
    assert [r.info.status for r in children(client, experiment)] == ["FAILED", "FAILED"]
