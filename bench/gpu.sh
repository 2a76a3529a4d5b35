#!/usr/bin/env bash
# The GPU measured, on a GPU host that has JAX and no network: install the wheelhouse (`make wheelhouse`, carried
# over) into a private folder, offline, then run bench/gpu.py (~6 min). Results land in $1 (default gpu-results/).
#   bash bench/gpu.sh /path/to/results
set -euo pipefail
HOUSE=${HOUSE:-wheelhouse}
RESULTS=${1:-gpu-results}
SITE=${SITE:-/tmp/cnn-pipeline-site}
start=$(date +%s)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$HOUSE"/*.whl
echo "offline install: $(( $(date +%s) - start )) s"
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" KERAS_BACKEND=jax PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 bench/gpu.py --out "$RESULTS" --budget "${BUDGET:-390}"
echo "total: $(( $(date +%s) - start )) s"
