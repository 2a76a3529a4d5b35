"""The models, losses and metrics are written in keras.ops: every model config trains under JAX unchanged."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

SMOKE = Path(__file__).with_name("backend_smoke.py")


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed (pip install 'jax[cpu]')")
def test_every_model_config_trains_one_step_under_jax():
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    done = subprocess.run([sys.executable, str(SMOKE)], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    trained = [line.split()[1] for line in done.stdout.splitlines() if line.startswith("ok ")]
    models = sorted(p.stem for p in (Path(__file__).parents[1] / "conf" / "model").glob("*.yaml"))
    assert set(models) <= set(trained), f"not trained under jax: {set(models) - set(trained)}"
    assert all(" jax " in line for line in done.stdout.splitlines() if line.startswith("ok "))
