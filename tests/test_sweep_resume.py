"""A sweep is its folder: killed part-way (the launching process SIGKILLed) and started again on the same
folder, it finishes the jobs that did not finish, runs none twice, and keeps one parent run."""

import os
import signal
import subprocess
import sys
import time

import pytest
from mlflow.tracking import MlflowClient

from conftest import run_stage

pytestmark = pytest.mark.slow

TINY = ["trainer=debug", "trainer.epochs=1", "model.depth=2", "data.splits.train=32", "tracking.log_model=false",
        "tracking.num_examples=1", "trainer.verbose=0"]  # fmt: skip


def children(client, experiment, parent=None):
    runs = client.search_runs([experiment], "tags.stage = 'train'")
    return [r for r in runs if parent is None or r.data.tags.get("mlflow.parentRunId") == parent]


def test_a_killed_grid_sweep_resumes_on_its_folder(tmp_path):
    project, folder = tmp_path, tmp_path / "outputs" / "multirun" / "grid"
    uri = f"sqlite:///{project}/mlflow.db"
    args = ["sweep=grid", *TINY, f"hydra.sweep.dir={folder}", "--multirun"]  # 4 jobs, one after another
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "HYDRA_FULL_ERROR": "0"}
    command = [sys.executable, "-m", "pipeline.train", f"paths.root={project}", *args]
    launcher = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client, deadline = MlflowClient(uri), time.monotonic() + 600
    finished = []
    while len(finished) < 2 and launcher.poll() is None and time.monotonic() < deadline:
        time.sleep(0.3)
        experiment = client.get_experiment_by_name("shapes")
        if experiment:
            finished = [r for r in children(client, experiment.experiment_id) if r.info.status == "FINISHED"]
    launcher.send_signal(signal.SIGKILL)  # no atexit, no callback: as a node that vanished
    launcher.wait()
    experiment = client.get_experiment_by_name("shapes").experiment_id
    before = {r.info.run_id: r for r in children(client, experiment) if r.info.status == "FINISHED"}
    assert 2 <= len(before) < 4, "the kill came too late to leave unfinished jobs"
    [parent] = client.search_runs([experiment], "tags.stage = 'sweep'")
    assert parent.info.status == "RUNNING"  # the SIGKILL left it so

    changed = run_stage("train", project, "sweep=grid", *TINY, "model.depth=3", f"hydra.sweep.dir={folder}", "-m")
    assert changed.returncode == 2
    assert (
        changed.stderr.strip()
        .splitlines()[-1]
        .startswith(f"error: hydra.sweep.dir={folder} holds a sweep with other settings: model.depth differ")
    ), changed.stderr[-2000:]

    resumed = run_stage("train", project, *args, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert (resumed.stdout + resumed.stderr).count("already FINISHED in run") == len(before)
    [again] = client.search_runs([experiment], "tags.stage = 'sweep'")
    assert again.info.run_id == parent.info.run_id and again.info.status == "FINISHED"
    assert again.data.tags["resumes"] == "1"
    done = [r for r in children(client, experiment, parent.info.run_id) if r.info.status == "FINISHED"]
    assert sorted(r.data.tags["overrides"] for r in done) == sorted({r.data.tags["overrides"] for r in done})
    assert len(done) == 4  # one FINISHED child per job, the earlier ones untouched:
    for run_id, run in before.items():
        assert client.get_run(run_id).info.end_time == run.info.end_time
    for run in done:
        assert len(client.get_metric_history(run.info.run_id, "val_loss")) == 1  # its epoch, once
    summary = client.download_artifacts(parent.info.run_id, "summary/summary.csv", str(tmp_path))
    assert len(open(summary).read().strip().splitlines()) == 1 + 4
    assert not [r for r in children(client, experiment) if r.info.status == "RUNNING"]
