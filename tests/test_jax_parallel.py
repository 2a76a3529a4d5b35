"""Data parallelism under JAX (keras.distribution.DataParallel), proven on CPU with two simulated devices
(XLA_FLAGS=--xla_force_host_platform_device_count=2): the train stage on two devices with batch 8 each and the
linear learning-rate rule is the same training as on one device with batch 16 at twice the rate."""

import importlib.util

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from helpers import find_runs, run_stage

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
    client = MlflowClient(f"sqlite:///{project}/mlflow.db")
    [run] = find_runs(client, "digits", "tags.stage = 'train'")
    curves = {key: [m.value for m in client.get_metric_history(run.info.run_id, key)] for key in ("loss", "val_loss")}
    return run, curves


def test_two_simulated_devices_train_as_one_device_with_the_same_global_batch(tmp_path):
    one, one_curve = train_on(tmp_path / "one", 1, "trainer.batch_size=16", "optimizer.lr=0.006")
    two, two_curve = train_on(tmp_path / "two", 2, "trainer.batch_size=8", "optimizer.lr=0.003")
    assert two.data.tags["replicas"] == "2" and one.data.tags["replicas"] == "1"
    for key in ("loss", "val_loss"):
        assert len(one_curve[key]) == len(two_curve[key]) == 2
        np.testing.assert_allclose(two_curve[key], one_curve[key], rtol=1e-4, err_msg=key)
