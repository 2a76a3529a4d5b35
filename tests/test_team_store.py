"""A team's store: PostgreSQL (Debian's package, an unprivileged cluster in a temp dir, loopback only) behind a
real `mlflow server`, and a parallel Optuna sweep whose runs go over HTTP and whose study lives in the same
PostgreSQL server."""

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from helpers import free_port, mlflow_server, run_stage

pytestmark = pytest.mark.slow


def postgres_bin() -> Path | None:
    found = shutil.which("pg_ctl") or next(iter(sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))[-1:]), None)
    return Path(found).resolve().parent if found else None  # /usr/local/bin links to Debian's versioned bin


@pytest.fixture(scope="module")
def postgres():
    """A fresh cluster on a free loopback port with databases mlflow and optuna; its base URL. Run as the
    `postgres` user when the tests run as root (PostgreSQL refuses root)."""
    bin_dir = postgres_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed (Debian: apt-get install postgresql)")
    folder = Path(tempfile.mkdtemp(prefix="pg-"))  # not under pytest's 0700 root-owned tmp: postgres must enter
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_user:
        shutil.chown(folder, "postgres", "postgres")
    data, port = folder / "data", free_port()

    def pg(tool: str, *args: str) -> None:
        subprocess.run([*as_user, str(bin_dir / tool), *args], check=True, capture_output=True, timeout=120)

    pg("initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {folder} -c fsync=off"
    pg("pg_ctl", "-D", str(data), "-o", options, "-l", str(folder / "server.log"), "-w", "start")
    try:
        for name in ("mlflow", "optuna"):
            pg("createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", name)
        yield f"postgresql://postgres@127.0.0.1:{port}"
    finally:
        pg("pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(folder, ignore_errors=True)


def test_a_parallel_sweep_against_a_tracking_server_on_postgresql(postgres, tmp_path):
    with mlflow_server(f"{postgres}/mlflow", tmp_path / "served-artifacts", tmp_path / "server.log") as url:
        args = ["sweep=optuna", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "hydra.sweeper.n_jobs=2",
                "hydra.sweeper.n_trials=2", f"hydra.sweeper.storage={postgres}/optuna", "trainer=debug",
                "trainer.epochs=2", "model.depth=2", "data.splits.train=32", "tracking.num_examples=1",
                "tracking.experiment=team", "trainer.verbose=0", "--multirun"]  # fmt: skip
        result = run_stage("train", tmp_path, *args, env={"MLFLOW_TRACKING_URI": url}, timeout=900)
        assert result.returncode == 0, result.stderr[-4000:]
        client = MlflowClient(url)
        experiment = client.get_experiment_by_name("team").experiment_id
        runs = client.search_runs([experiment])
        [parent] = [r for r in runs if r.data.tags["stage"] == "sweep"]
        children = [r for r in runs if r.data.tags["stage"] == "train"]
        assert parent.info.status == "FINISHED" and len(children) == 2
        for child in children:
            assert child.info.status == "FINISHED"
            assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
            for key in ("loss", "val_loss", "val_mean_iou"):  # every epoch's metric exactly once
                assert sorted(m.step for m in client.get_metric_history(child.info.run_id, key)) == [0, 1], key
            assert child.info.artifact_uri.startswith("mlflow-artifacts:")  # through the server
            assert "plots/test_predictions.png" in {a.path for a in client.list_artifacts(child.info.run_id, "plots")}
    assert any((tmp_path / "served-artifacts").rglob("test_predictions.png"))

    import optuna  # the study is in the same PostgreSQL server, with the MLflow parent run on it

    [summary] = optuna.get_all_study_summaries(f"{postgres}/optuna")
    study = optuna.load_study(study_name=summary.study_name, storage=f"{postgres}/optuna")
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 2
    assert study.user_attrs["mlflow_parent_run_id"] == parent.info.run_id
    values = sorted(c.data.metrics["selection_val_mean_iou"] for c in children)  # what each trial returned
    assert values == pytest.approx(sorted(t.value for t in study.trials))
