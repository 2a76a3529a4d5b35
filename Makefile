# Every target sets itself up: the virtual environment is (re)built whenever pyproject.toml changes.
#   make train                          the default shapes U-Net, logged to ./mlflow.db
#   make train ARGS="model.depth=3"     any Hydra overrides
#   make test | make test-slow          fast suite | the slow end-to-end checks (CI runs both)
#   make quality                        the full-length quality runs (before a release; figures in the README)
#   make test-notebooks                 runs every notebook in notebooks/ top to bottom
#   make ui                             MLflow UI on http://127.0.0.1:5000
#   make docs                           the documentation site (MkDocs, --strict) into site/
#   make bench                          pipeline vs bare Keras, input pipeline, FLOP/s, precision, XLA, memory
#   make sweep                          a tiny 2x2 grid sweep, 2 jobs at a time; then `make compare`
#   make wheelhouse                     wheels for an offline Linux x86-64 Python 3.12 host with JAX (./wheelhouse)
#   make wheelhouse-check               installs from it alone into a fresh JAX venv and trains (no TensorFlow)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PORT   ?= 5000
ARGS   ?=
PYTEST_ARGS ?=

.PHONY: docs wheelhouse wheelhouse-check setup train prepare sweep compare test test-slow test-notebooks test-all quality bench ui lint format check-notebooks strip-notebooks clean clean-all

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip uv
	@# uv (Astral, MIT/Apache-2.0) installs what pip would, from pyproject.toml, in a fraction of pip's time; pip
	@# (which reads pip.conf: a mirror, constraints) installs where uv fails
	$(BIN)/python -m uv pip install --quiet --compile-bytecode --python $(BIN)/python -e ".[dev]" \
		|| { echo "uv failed: installing with pip"; $(BIN)/python -m pip install --quiet -e ".[dev]"; }
	@# hydra-optuna-sweeper (pinned optuna<3) was replaced by our sweeper: an old venv must not keep it
	$(BIN)/python -m pip uninstall --quiet --yes hydra-optuna-sweeper 2>/dev/null || true
	@touch $(STAMP)

setup: $(STAMP)

train: $(STAMP)
	$(BIN)/cnn train $(ARGS)

prepare: $(STAMP)
	$(BIN)/cnn prepare $(ARGS)

# 4 tiny U-Nets (lr x base_filters, conf/sweep/grid.yaml) in parallel: one MLflow parent run, 4 children
sweep: $(STAMP)
	$(BIN)/cnn train --multirun sweep=grid hydra/launcher=joblib hydra.launcher.n_jobs=2 \
		trainer=debug trainer.epochs=3 data.splits.train=64 model.depth=2 tracking.log_model=false $(ARGS)

compare: $(STAMP)
	$(BIN)/cnn compare $(ARGS)

# tests run in parallel worker processes (pytest-xdist), a test file per worker so module fixtures are shared
XDIST ?= -n auto --maxprocesses 4 --dist loadfile

test: $(STAMP)
	$(BIN)/python -m pytest -m "not slow and not notebooks and not quality" $(XDIST) $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow $(XDIST) --no-loadscope-reorder $(PYTEST_ARGS)

# the full-length quality runs (default U-Net >= 0.90, localizer >= 0.77), five fresh parallel sweeps and streamed
# training's peak memory: before a release, not in CI
quality: $(STAMP)
	$(BIN)/python -m pytest -m quality $(PYTEST_ARGS)

test-notebooks: $(STAMP)
	$(BIN)/python -m pytest -m notebooks -n auto --maxprocesses 4 --dist load $(PYTEST_ARGS)

test-all: $(STAMP)
	$(BIN)/python -m pytest -m "not quality" $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/cnn bench $(ARGS)

# HOST_PACKAGES: what the host already has (pip list --format=freeze there); HOST_PYTHON: its Python version
HOST_PACKAGES ?= bench/gpu-host-packages.txt
HOST_PYTHON ?= 3.12
wheelhouse: $(STAMP)
	$(BIN)/python scripts/wheelhouse.py --python $(HOST_PYTHON) --host-packages $(HOST_PACKAGES)

wheelhouse-check: wheelhouse
	PY=$${HOST_PY:-python$(HOST_PYTHON)} bash scripts/check_wheelhouse.sh

ui: $(STAMP)
	$(BIN)/cnn ui --port $(PORT)

docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

lint: $(STAMP) check-notebooks
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

check-notebooks: $(STAMP)
	$(BIN)/python -m pipeline.notebook check notebooks/*.ipynb

strip-notebooks: $(STAMP)
	$(BIN)/python -m pipeline.notebook strip notebooks/*.ipynb

format: $(STAMP)
	$(BIN)/ruff format src tests
	$(BIN)/ruff check --fix src tests

clean:
	rm -rf outputs multirun site .pytest_cache .ruff_cache
	find . -name __pycache__ -not -path "./$(VENV)/*" -prune -exec rm -rf {} +

clean-all: clean
	rm -rf $(VENV) data/shapes data/shapes_debug mlflow.db mlflow.db-wal mlflow.db-shm mlartifacts
