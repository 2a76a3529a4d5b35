"""A brand-new SQLite store opened by several processes at the same instant: the first creates and migrates
it, the others wait for it (pipeline.tracking.store.open_store). Without the lock, MLflow's migrations ran in
each process at once and failed (`duplicate column name: step`, `Online migration expected to match one row`),
and a sweep whose callback failed that way went on with un-nested children."""

import os
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from helpers import TINY, find_runs

pytestmark = pytest.mark.slow

OPEN = "import sys; from pipeline.tracking.store import prepare_store; prepare_store(sys.argv[1], 'shapes', None)"


def together(commands: list[list[str]], env: dict) -> list[subprocess.CompletedProcess]:
    """Start every command at once; their results."""
    started = [
        subprocess.Popen(c, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in commands
    ]
    return [subprocess.CompletedProcess(p.args, p.wait(timeout=600), *p.communicate()) for p in started]


def test_processes_opening_a_fresh_store_at_once_all_find_it_ready(tmp_path):
    for attempt in range(2):
        uri = f"sqlite:///{tmp_path}/store{attempt}/mlflow.db"
        results = together([[sys.executable, "-c", OPEN, uri]] * 3, dict(os.environ))
        for result in results:
            assert result.returncode == 0, result.stderr[-2000:]
        assert [e.name for e in MlflowClient(uri).search_experiments()].count("shapes") == 1


def test_a_sweep_and_a_reader_on_a_fresh_store_at_the_same_instant(tmp_path):
    """The sweep's callback opens the store (its parent run) while `cnn compare` opens it too. The bare race, three
    processes at once, is the test above, twice; this one checks that the sweep still nests its child."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "HYDRA_FULL_ERROR": "0"}
    sweep = [sys.executable, "-m", "pipeline.commands.train", f"paths.root={tmp_path}", *TINY, "trainer.epochs=1",
             "tracking.log_model=false", "tracking.num_examples=0", "optimizer.lr=1e-3", "--multirun"]  # fmt: skip
    reader = [sys.executable, "-m", "pipeline.commands.compare", "--uri", uri]
    swept, read = together([sweep, reader], env)
    assert swept.returncode == 0, swept.stderr[-3000:]
    assert "Traceback" not in read.stderr and read.returncode in (0, 2), read.stderr[-2000:]  # 2: no sweep yet
    client = MlflowClient(uri)
    runs = find_runs(client, "shapes")
    [parent] = [r for r in runs if r.data.tags["stage"] == "sweep"]
    [child] = [r for r in runs if r.data.tags["stage"] == "train"]
    assert parent.info.status == child.info.status == "FINISHED"
    assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
