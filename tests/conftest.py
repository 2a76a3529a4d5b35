"""Fixtures: real Hydra composition, a temporary project root, and the runs trained once per session.
Helpers that are not fixtures live in helpers.py. Imports no Keras: NumPy-only tests run without it."""

import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from helpers import TINY, train_run
from pipeline.config import conf_dir

# the slow files that take longest (`make test-slow PYTEST_ARGS=--durations=0` on the 2-core machine: 220-270 s
# down to 40 s), handed to the test-slow workers first (its --no-loadscope-reorder keeps this order) so that no
# worker starts a long file when the other is nearly done
LONGEST_FIRST = ("test_default_quality.py", "test_sweep_resume.py", "test_backends.py", "test_visualize_e2e.py",
                 "test_store_race.py", "test_sweeps.py", "test_resume.py", "test_transfer.py", "test_jax_parallel.py",
                 "test_team_store.py", "test_streaming.py", "test_own_data.py")  # fmt: skip


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest in collection order


@pytest.fixture(autouse=True)
def hydra_config_unset():
    """A test that sets Hydra's global job config (HydraConfig, as a run does) leaves it unset again: the schema
    reads the chosen options from it, so a later test's composed config would be checked against another
    test's choices (data=folder's keys against data=shapes')."""
    from hydra.core.hydra_config import HydraConfig

    yield
    HydraConfig.instance().cfg = None


@pytest.fixture(autouse=True)
def float32_policy():
    """A stage run in-process sets Keras' global dtype policy (trainer.precision=auto may pick bfloat16):
    put float32 back, so later tests compute at the precision they assume."""
    yield
    if "keras" in sys.modules:  # NumPy-only tests never import it
        sys.modules["keras"].config.set_dtype_policy("float32")


@pytest.fixture
def compose_config():
    """compose_config(overrides) -> the resolved DictConfig the train stage would get (no Hydra run dir)."""

    def _compose(overrides=()):
        with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
            return compose(config_name="config", overrides=list(overrides), return_hydra_config=False)

    return _compose


@pytest.fixture
def project(tmp_path: Path):
    """A temporary project root: its own data/, outputs/ and a SQLite MLflow store."""
    return tmp_path


@pytest.fixture(scope="session")
def tiny_unet(tmp_path_factory):
    """(project, client, run) of one tiny shapes U-Net, trained once per test session and shared by the
    tests that read a trained run (train records, evaluate, predict, visualize)."""
    project = tmp_path_factory.mktemp("tiny_unet")
    tiny = [*TINY, "optimizer.lr=0.002", "model.base_filters=6", "tracking.system_metrics=0.5", "tta=dihedral"]
    return project, *train_run(project, *tiny)


@pytest.fixture(scope="session")
def lenet5_digits(tmp_path_factory):
    """(project, client, run) of LeNet-5 trained one epoch on the bundled digits, once per session."""
    project = tmp_path_factory.mktemp("lenet5_digits")
    return project, *train_run(project, "experiment=digits_lenet5", "trainer.epochs=1")
