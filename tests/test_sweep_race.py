"""Nothing lost in parallel, repeated: a fresh 4-job joblib sweep on a fresh store and fresh data, five times;
every child FINISHED with all its metrics. The race it guards against (two workers inserting the same MLflow
dataset row, `UNIQUE constraint failed`) struck the first `make sweep` on a fresh data set; its root fix is
that the sweep's parent inserts the dataset rows before any job starts (pipeline.sweeps.sweep.log_base_datasets).
Marked `quality` (`make quality`): five sweeps cost about 3 minutes, more than CI's budget leaves."""

import pytest
from mlflow.tracking import MlflowClient

from helpers import find_runs, run_stage

pytestmark = pytest.mark.quality

SWEEP = ["sweep=grid", "hydra/launcher=joblib", "hydra.launcher.n_jobs=4", "trainer=debug", "trainer.epochs=1",
         "model.depth=2", "tracking.num_examples=1", "tracking.log_model=false", "trainer.verbose=0",
         "--multirun"]  # fmt: skip


@pytest.mark.parametrize("attempt", range(5))
def test_a_fresh_parallel_sweep_loses_nothing(tmp_path, attempt):
    result = run_stage("train", tmp_path, *SWEEP, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = find_runs(client, "shapes")
    [parent] = [r for r in runs if r.data.tags["stage"] == "sweep"]
    children = [r for r in runs if r.data.tags["stage"] == "train"]
    assert parent.info.status == "FINISHED" and len(children) == 4
    for child in children:
        assert child.info.status == "FINISHED"
        for key in ("loss", "val_loss", "val_mean_iou", "test_mean_iou"):
            assert len(client.get_metric_history(child.info.run_id, key)) == 1, key
