"""The default `make train` job, exactly as shipped, reaches the promised quality (slow: ~4 min on 2 cores)."""

import pytest
from mlflow.tracking import MlflowClient

from conftest import run_stage


@pytest.mark.slow
def test_default_unet_reaches_test_mean_iou_of_090(tmp_path):
    result = run_stage("train", tmp_path, "trainer.verbose=2", timeout=1200)
    assert result.returncode == 0, result.stderr[-4000:]
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    [run] = client.search_runs([client.get_experiment_by_name("shapes").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.metrics["test_mean_iou"] >= 0.90, run.data.metrics
