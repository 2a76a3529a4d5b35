"""Fixtures: real Hydra composition, a temporary project root, and the runs trained once per session.
Helpers that are not fixtures live in helpers.py. Imports no Keras: NumPy-only tests run without it."""

import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from helpers import TINY, train_run
from pipeline.config import conf_dir

# seconds each file's tests take in `make test` and in `make test-slow` (`--durations=0` on the 2-core machine,
# summed by file; the files under 15 s in both are left out): each suite hands its longest files to the workers
# first (the Makefile's --no-loadscope-reorder keeps this order) so that no worker starts a long file when the
# other is nearly done
SECONDS = {  # file: (make test, make test-slow)
    "test_sweep_resume.py": (0, 287), "test_transfer.py": (91, 131), "test_sweeps.py": (0, 179),
    "test_resume.py": (0, 157), "test_default_quality.py": (0, 155), "test_team_store.py": (0, 114),
    "test_backends.py": (0, 113), "test_hub_backbone.py": (37, 63), "test_jax_parallel.py": (0, 99),
    "test_export.py": (83, 0), "test_distributed.py": (6, 77), "test_store_race.py": (0, 76),
    "test_visualize_e2e.py": (4, 65), "test_own_data.py": (1, 60), "test_serving.py": (39, 21),
    "test_cli_errors.py": (58, 0), "test_classification_e2e.py": (57, 0), "test_tasks.py": (52, 0),
    "test_regression.py": (21, 22), "test_recipes.py": (42, 0), "test_classifiers.py": (40, 0),
    "test_bench.py": (37, 0), "test_bad_data.py": (18, 17), "test_safety.py": (32, 0),
    "test_oxford_pets.py": (29, 0), "test_streaming.py": (2, 24), "test_evaluate_predict.py": (26, 0),
    "test_segmentation_models.py": (23, 0), "test_validation.py": (21, 0), "test_train_e2e.py": (21, 0),
    "test_docs.py": (20, 0), "test_tracking_records.py": (17, 0),
}  # fmt: skip


def pytest_collection_modifyitems(config, items):
    def seconds(item):
        return SECONDS.get(item.path.name, (0, 0))[item.get_closest_marker("slow") is not None]

    items.sort(key=lambda item: -seconds(item))  # stable: the rest in collection order


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
