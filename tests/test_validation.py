"""Bad configs stop the train stage before any work with one line naming the key, the value and what is valid.

The stage runs in-process (hydra.main passes a composed config straight through), against a SQLite
store in a temporary folder: no MLflow run may be left RUNNING (none is even started).
"""

import sys

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from helpers import TINY, runs_left_running
from pipeline.commands import train
from pipeline.config import conf_dir, group_options
from pipeline.config.schema import check_schema


@pytest.fixture
def train_stage(project, compose_config, capsys):
    """train_stage(*overrides) -> the stage's one `error:` line (it must exit with status 2)."""

    def _run(*overrides):
        uri = f"sqlite:///{project}/mlflow.db"
        tiny = [o for o in TINY if not o.startswith("model.")] if any("model=" in o for o in overrides) else TINY
        cfg = compose_config([f"paths.root={project}", f"tracking.uri={uri}", *tiny, *overrides])
        with pytest.raises(SystemExit) as exited:
            train.main(cfg)
        assert exited.value.code == 2
        errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, errors
        assert not runs_left_running(project)
        return errors[0]

    return _run


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        # impossible conv arithmetic: LeNet-5's C5 gets a 4x4 map from 30x30 inputs (its 5x5 kernel needs 5)
        (
            ["data=digits", "model=lenet5", "data.image_size=30"],
            "model=lenet5 cannot be built for data.image_size=30 (30x30x1 inputs): layer C5 (Conv2D) fails: "
            "Computed output size would be zero or negative",
        ),
        (["data=digits", "model=lenet5", "data.image_size=30"], "valid: e.g. data.image_size=32"),
        (["model.depth=3", "data.image_size=20"], "input size 20x20 cannot pass layer encoder3_pool"),
        # unknown names
        (
            ["data.layout=csv"],
            "data.layout='csv' is unknown; valid: folders, oxford_pets, digits, glyphs, image_folder",
        ),
        (["data.task=detection"], "data.task='detection' is unknown; valid: segmentation, classification"),
        (["optimizer.schedule=linear"], "optimizer.schedule='linear' is unknown; valid: constant, cosine"),
        (["data.on_bad_file=ignore"], "data.on_bad_file='ignore' is unknown; valid: error, skip"),
        (["tta=rotations"], "tta='rotations' is invalid: must be none, flips, dihedral (true = flips, false = none)"),
        (
            ["experiment=shapes_localization", "model=localizer", "tta=flips"],
            "tta=flips averages over mirrored and turned views, but a box moves when its image is mirrored or turned "
            "(localization task); valid: tta=none",
        ),
        (["model.upsampling=magic"], "model.upsampling='magic' is unknown"),
        # negative or zero sizes
        (["data.image_size=0"], "data.image_size=0 is invalid: must be a positive integer"),
        (["trainer.batch_size=-8"], "trainer.batch_size=-8 is invalid: must be a positive integer"),
        (["data.splits.train=0"], "data.splits.train=0 is invalid: must be a positive integer"),
        (["model.base_filters=0"], "model.base_filters=0 is invalid: must be an integer >= 1"),
        (["loss.dice=-1"], "loss.dice=-1 is invalid: must be a number >= 0"),
        # wrong types and kinds
        (["trainer.deterministic=maybe"], "trainer.deterministic='maybe' is invalid: must be true or false"),
        (["trainer.jit_compile=fast"], "trainer.jit_compile='fast' is invalid: must be auto, true or false"),
        (["data.classes=[background]"], "data.classes=['background'] is invalid: must be a list of at least 2"),
        (["data=digits"], "model.name=unet is a segmentation model but data=digits is a classification set"),
        # a class count that does not match the data (found once the labels are read)
        (
            ["data=shapes_cls", "model=lenet5", "data.classes=[circle,square]"],
            "data.classes=['circle', 'square'] is invalid: the shapes generator draws ['circle', 'square', 'triangle']",
        ),
    ],
)
def test_bad_config_stops_before_training(train_stage, overrides, expected):
    assert expected in train_stage(*overrides)


def test_schema_failures_come_before_any_data_is_prepared(train_stage, project):
    train_stage("trainer.epochs=0")
    assert not (project / "data").exists()


def test_labels_beyond_the_class_list_are_named():
    import numpy as np

    from pipeline.errors import ConfigError
    from pipeline.tasks import get_task

    with pytest.raises(
        ConfigError, match="data.classes has 3 names but the train split of data=digits has labels 0..9"
    ):
        get_task("classification").check_targets(np.arange(10), ["0", "1", "2"], "train", "digits")


def test_the_schema_answers_before_any_deep_learning_library_loads(tmp_path):
    """A typo is answered in well under a second because validation imports no Keras, TensorFlow, JAX or torch;
    the export formats it accepts are exactly the ones pipeline.deploy.exporting implements."""
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from hydra import compose, initialize_config_dir\n"
        "from pipeline.config import conf_dir\n"
        "from pipeline.errors import ConfigError\n"
        "from pipeline.config.schema import check_schema\n"
        "with initialize_config_dir(config_dir=conf_dir(), version_base='1.3'):\n"
        "    cfg = compose(config_name='config', overrides=['+trainer.epoch=3'])\n"
        "try:\n"
        "    check_schema(cfg)\n"
        "except ConfigError as err:\n"
        "    print(err)\n"
        "print(sorted(m for m in ('keras', 'tensorflow', 'jax', 'torch') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert lines[0].startswith("trainer.epoch is not a key of trainer") and lines[-1] == "[]", done.stdout
    from pipeline.config.options import EXPORT_FORMATS
    from pipeline.deploy import exporting

    assert tuple(exporting.FORMATS) == EXPORT_FORMATS


@pytest.mark.parametrize("experiment", group_options("experiment"))
def test_every_experiment_composes_and_passes_the_schema(experiment):
    """An experiment that includes another (the tuned ones) or overrides a group composes, and what it sets
    is valid (a sweep's, for its first job); the transfer study's belong to the transfer stage's config."""
    name = "transfer" if experiment.startswith("transfer") else "config"
    overrides = [f"experiment={experiment}"] + (["transfer.source=MobileNetV2"] if name == "transfer" else [])
    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        cfg = compose(config_name=name, overrides=overrides, return_hydra_config=True)
        swept = cfg.hydra.sweeper.get("params") or {}  # a multirun experiment: its first job
        if swept:
            first = [f"{key}={str(values).split(',')[0]}" for key, values in swept.items()]
            cfg = compose(config_name=name, overrides=[*overrides, *first], return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)  # run names made of the job's overrides resolve as in a run
    with open_dict(cfg):
        del cfg.hydra
    check_schema(cfg)


def test_a_stage_run_in_process_leaves_no_hydra_job_behind(tmp_path, monkeypatch, compose_config):
    """The schema reads the chosen options from Hydra's job config while a job runs. After a stage's main ran
    in this process (a notebook's), Hydra has put its job config back, so a later composed data=folder config
    is checked against its own keys, not against the earlier run's data=shapes."""
    monkeypatch.setattr(sys, "argv", ["cnn-train", f"paths.root={tmp_path}", f"hydra.run.dir={tmp_path}/out",
                                      "trainer.epochs=0"])  # fmt: skip
    with pytest.raises(SystemExit):
        train.main()
    assert not HydraConfig.initialized()
    check_schema(compose_config(["data=folder", f"data.root={tmp_path}", "data.classes=[a,b]"]))
