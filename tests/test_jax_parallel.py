"""Data parallelism under JAX (keras.distribution.DataParallel), proven on CPU: the train stage on two devices
with batch 8 each and the linear learning-rate rule is the same training as on one device with batch 16 at twice
the rate, whether the two devices are simulated in one process (XLA_FLAGS=--xla_force_host_platform_device_count=2)
or belong to two processes on loopback (keras.distribution.initialize, as on two hosts)."""

import importlib.util
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from helpers import find_runs, free_port, run_stage

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed (the dev extra)"),
]

# LeNet-5 on the bundled digits (no dropout, nothing to generate, seconds to compile)
COMMON = ["data=digits", "model=lenet5", "trainer=debug", "trainer.epochs=2", "data.splits.train=64",
          "trainer.precision=float32", "augment=none", "tracking.log_model=false", "trainer.verbose=0"]  # fmt: skip


def train_on(project, devices: int, *overrides: str):
    flags = f"--xla_force_host_platform_device_count={devices}" if devices > 1 else ""
    env = {"KERAS_BACKEND": "jax", "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"}
    result = run_stage("train", project, *COMMON, *overrides, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return curves_of(project)


def curves_of(project):
    client = MlflowClient(f"sqlite:///{project}/mlflow.db")
    [run] = find_runs(client, "digits", "tags.stage = 'train'")
    return run, {
        key: [m.value for m in client.get_metric_history(run.info.run_id, key)] for key in ("loss", "val_loss")
    }


@pytest.fixture(scope="module")
def one_device(tmp_path_factory):
    """The reference: one device, batch 16, lr 0.006."""
    return train_on(tmp_path_factory.mktemp("one"), 1, "trainer.batch_size=16", "optimizer.lr=0.006")


def same_training(curves, reference):
    for key in ("loss", "val_loss"):
        assert len(curves[key]) == len(reference[key]) == 2
        np.testing.assert_allclose(curves[key], reference[key], rtol=1e-4, err_msg=key)


def test_two_simulated_devices_train_as_one_device_with_the_same_global_batch(tmp_path, one_device):
    one, one_curve = one_device
    two, two_curve = train_on(tmp_path / "two", 2, "trainer.batch_size=8", "optimizer.lr=0.003")
    assert two.data.tags["replicas"] == "2" and one.data.tags["replicas"] == "1"
    assert one.data.tags["jit_compile"] == "true"  # trainer.jit_compile=auto: JAX steps are XLA-compiled on CPU too
    same_training(two_curve, one_curve)


def test_two_processes_train_one_run_together_and_the_first_logs_it(tmp_path, one_device):
    """Two processes of one device each (as two hosts), each feeding half of every global batch of 16."""
    coordinator, store = f"127.0.0.1:{free_port()}", f"sqlite:///{tmp_path}/mlflow.db"
    processes = []
    for index in range(2):
        env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "", "HYDRA_FULL_ERROR": "0",
               "MLFLOW_TRACKING_URI": store, "KERAS_DISTRIBUTION_JOB_ADDRESSES": coordinator,
               "KERAS_DISTRIBUTION_NUM_PROCESSES": "2", "KERAS_DISTRIBUTION_PROCESS_ID": str(index)}  # fmt: skip
        command = [sys.executable, "-m", "pipeline.commands.train", f"paths.root={tmp_path}", *COMMON,
                   "trainer.strategy=multi_worker", "trainer.batch_size=8", "optimizer.lr=0.003",
                   f"hydra.run.dir={tmp_path}/outputs/p{index}"]  # fmt: skip
        processes.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = [process.communicate(timeout=600) for process in processes]
    for process, (_, err) in zip(processes, outputs):
        assert process.returncode == 0, err[-3000:]
    scores = [float(found) for out, err in outputs for found in re.findall(r"test accuracy: ([0-9.]+)", out + err)]
    assert len(scores) == 2 and scores[0] == scores[1]  # one model, tested by each process on its own copy

    run, curves = curves_of(tmp_path)  # the shared store holds the first process's run only
    assert run.info.status == "FINISHED" and run.data.tags["replicas"] == "2"
    assert run.data.params["trainer.strategy"] == "multi_worker"
    same_training(curves, one_device[1])
    assert (tmp_path / "outputs" / "p1" / "worker1-mlflow.db").is_file()
