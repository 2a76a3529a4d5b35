#!/usr/bin/env bash
# `make wheelhouse-check`: play the offline GPU host on this machine. A fresh venv (Python $PY) gets JAX for
# CPU and the packages such a host already has (wheelhouse/host-requirements.txt, from PyPI), then this package
# from the wheelhouse alone (--no-index: nothing else may be fetched), then the train stage under JAX with
# TensorFlow absent.
set -euo pipefail
PY=${PY:-python3.12}
HOUSE=${HOUSE:-wheelhouse}
VENV=${VENV:-/tmp/cnn-wheelhouse-check}
WORK=$(mktemp -d)
rm -rf "$VENV"
"$PY" -m venv "$VENV"
"$VENV/bin/pip" install --quiet --upgrade pip
echo "playing the host: jax[cpu] and $(wc -l < "$HOUSE/host-requirements.txt") packages such a host has (from PyPI)"
"$VENV/bin/pip" install --quiet "jax[cpu]" -r "$HOUSE/host-requirements.txt"
if "$VENV/bin/python" -c "import tensorflow" 2>/dev/null; then echo "tensorflow must be absent"; exit 1; fi
"$VENV/bin/pip" install --quiet --no-index --find-links "$HOUSE" cnn-pipeline
cd "$WORK"
MLFLOW_TRACKING_URI="sqlite:///$WORK/mlflow.db" "$VENV/bin/cnn" train trainer=debug paths.root="$WORK" trainer.verbose=0
"$VENV/bin/python" - "$WORK" <<'PY'
import sys
from mlflow.tracking import MlflowClient
client = MlflowClient(f"sqlite:///{sys.argv[1]}/mlflow.db")
[run] = client.search_runs([e.experiment_id for e in client.search_experiments()], "tags.stage = 'train'")
assert run.info.status == "FINISHED", run.info.status
assert run.data.tags["system.backend"] == "jax", run.data.tags["system.backend"]
print(f"wheelhouse check passed: backend {run.data.tags['system.backend']}, run FINISHED, "
      f"test_mean_iou {run.data.metrics['test_mean_iou']:.3f}")
PY
