"""Bad overrides fail at once with one line naming the key and what is valid, and record no run."""

import os
from pathlib import Path

import mlflow
import pytest

from helpers import TINY, run_here, run_stage, runs_left_running
from pipeline.config import conf_dir


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("model.base_filters=-4", "model.base_filters=-4 is invalid: must be an integer >= 1"),
        (
            "model.name=resnet9000",
            "model.name='resnet9000' is unknown; valid: alexnet, convnet, deeplabv3plus, googlenet, lenet5, localizer",
        ),
        ("model.depth=6", "cannot pass layer encoder6_pool"),  # 32 px images cannot be pooled 6 times
        ("model.dropout=high", "model.dropout='high' is invalid: must be a number"),
        ("+model.kernel=3", "model.kernel is not an option of unet; valid: depth, base_filters"),
        ("optimizer.lr=-0.1", "optimizer.lr=-0.1 is invalid: must be a number > 0"),
        ("optimizer.name=adagrad", "optimizer.name='adagrad' is unknown; valid: adam, adamw, sgd"),
        ("trainer.epochs=0", "trainer.epochs=0 is invalid: must be a positive integer"),
        ("trainer.precision=float8", "trainer.precision='float8' is unknown"),
        ("augment.train=[{name:Blurr}]", "augment.train[0].name='Blurr' is not an albumentations transform"),
        # Hydra's own advice for the typo trainer.epoch=3 is +trainer.epoch=3: refused, not trained for 1 epoch
        ("+trainer.epoch=3", "trainer.epoch is not a key of trainer=debug; did you mean trainer.epochs?"),
        (
            "trainer.epoch=3",
            "trainer.epoch is not a key of trainer (in any conf/trainer option); did you mean trainer.epochs?",
        ),
        ("+data.image_sise=32", "data.image_sise is not a key of data=shapes; did you mean data.image_size?"),
        ("+model.dept=2", "model.dept is not an option of unet; valid: depth"),
    ],
)
def test_bad_override_fails_with_one_line(project, override, expected):
    result = run_here("train", project, *TINY, override)  # as the command line, in this process
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and expected in errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert not runs_left_running(project)  # nothing half-done is left behind in the store


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["model=resnet9000"], "model=resnet9000: conf/model has no option 'resnet9000'; did you mean model=resnet?"),
        (["model=unett"], "model=unett: conf/model has no option 'unett'; did you mean model=unet?"),
        # a multirun's list: the one option that is not there is named
        (["augment=default,geometrc", "-m"], "augment=geometrc: conf/augment has no option 'geometrc'; did you mean"),
        (["experiment=null"], "experiment=null: a config group takes an option, not null (~experiment leaves it out)"),
    ],
)
def test_an_option_its_config_group_lacks_is_one_line_with_the_nearest_and_the_valid_ones(project, overrides, expected):
    """Hydra's own answer is eight lines with its search path (a traceback for group=null), and exit status 1."""
    result = run_here("train", project, *overrides)
    assert result.returncode == 2, result.stderr[-2000:]
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {expected}"), line
    group = overrides[0].split("=")[0]
    on_disk = sorted(name.removesuffix(".yaml") for name in os.listdir(Path(conf_dir(), group)))
    assert line.endswith(f"valid: {', '.join(on_disk)}"), line


def test_an_option_in_a_config_folder_the_command_line_adds_is_valid_and_its_typo_one_line(project, tmp_path):
    """hydra.searchpath or --config-dir (-cd) adds a folder: its options are valid choices, and a typo is named
    with the options of both folders."""
    from pipeline.config import misspelt_choice

    extra = tmp_path / "extra"
    (extra / "model").mkdir(parents=True)
    (extra / "model" / "mine.yaml").write_text("defaults:\n  - unet\n  - _self_\ndepth: 2\n")
    searchpath = f"hydra.searchpath=[file://{extra}]"
    result = run_here("train", project, searchpath, "model=mine", "--cfg", "job")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "depth: 2" in result.stdout
    result = run_here("train", project, searchpath, "model=mien", "--cfg", "job")
    assert result.returncode == 2, result.stderr[-2000:]
    [line] = result.stderr.strip().splitlines()
    on_disk = sorted([*(name.removesuffix(".yaml") for name in os.listdir(Path(conf_dir(), "model"))), "mine"])
    expected = (f"model=mien: conf/model and {extra / 'model'} have no option 'mien'; did you mean model=mine? "
                f"valid: {', '.join(on_disk)}")  # fmt: skip
    assert line == f"error: {expected}"
    # Hydra's flags come before the overrides (cnn train --config-dir X model=mine): argparse's order
    for flags in (["--config-dir", str(extra)], [f"--config-dir={extra}"], ["-cd", str(extra)]):
        assert misspelt_choice([*flags, "model=mine"]) is None
        assert misspelt_choice([*flags, "model=mien"]) == expected


def test_an_option_from_an_added_folder_sets_its_group_s_keys_and_a_key_it_invents_is_one_line(project, tmp_path):
    """A user's own data option beside conf/ (hydra.searchpath, --config-dir) may set every key conf/data
    declares; a key it invents would be read by nothing, so it is refused naming the user's file."""
    extra = tmp_path / "extra"
    (extra / "data").mkdir(parents=True)
    mine = extra / "data" / "mine.yaml"
    mine.write_text("defaults:\n  - shapes\n  - _self_\nroot: ${paths.data_dir}/mine\ngenerator: {max_shapes: 2}\n")
    searchpath = f"hydra.searchpath=[file://{extra}]"
    result = run_here("prepare", project, searchpath, "data=mine", "trainer=debug")
    assert result.returncode == 0, result.stderr[-2000:]
    assert (project / "data" / "mine" / "train" / "images").is_dir()
    mine.write_text(mine.read_text() + "generater: {seed: 1}\n")
    result = run_here("prepare", project, searchpath, "data=mine", "trainer=debug")
    assert result.returncode == 2, result.stderr[-2000:]
    [line] = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert line.startswith(f"error: data.generater is not a key of data=mine ({mine}); did you mean data.generator?")


def test_a_model_key_only_an_added_folder_declares_is_its_builder_s_to_check(tmp_path):
    """Before Hydra: a model option beside conf/ declares keys (the builder checks them when it is called);
    the other groups' keys stay those conf/ declares, the ones the pipeline reads."""
    from pipeline.config import misspelt_override

    extra = tmp_path / "extra"
    for group in ("model", "data"):
        (extra / group).mkdir(parents=True)
        (extra / group / "mine.yaml").write_text("own_key: 1\n")
    assert misspelt_override(["--config-dir", str(extra), "model=mine", "model.own_key=2"]) is None
    alone = misspelt_override(["model.own_key=2"])
    assert alone.startswith("model.own_key is not a key of model (in any conf/model option);"), alone
    added = misspelt_override(["--config-dir", str(extra), "model.own_kee=2"])
    assert added.startswith(
        f"model.own_kee is not a key of model (in any conf/model or {extra / 'model'} option); "
        "did you mean model.own_key?"
    ), added
    data = misspelt_override(["--config-dir", str(extra), "data=mine", "data.own_key=2"])
    assert data.startswith("data.own_key is not a key of data (in any conf/data option);"), data


def test_an_option_in_a_package_the_command_line_adds_is_left_to_hydra(project):
    """A pkg:// search path is not read here: its options, and its typos, are Hydra's to name."""
    result = run_here("train", project, "hydra.searchpath=[pkg://pipeline]", "model=mien", "--cfg", "job")
    assert result.returncode == 1 and "Could not find 'model/mien'" in result.stderr, result.stderr[-2000:]


def test_a_key_no_option_declares_is_answered_before_hydra_with_the_nearest_one(project):
    result = run_stage("train", project, "model.widht=3")
    assert result.returncode == 2
    [line] = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert line.startswith(
        "error: model.widht is not a key of model (in any conf/model option); did you mean model.width?"
    )


def test_an_added_key_is_checked_against_the_option_chosen(project):
    """generator is the generated sets' key: +data.generator.seed on a user's folder set would be ignored."""
    chosen = ["data=folder", f"data.root={project}", "data.classes=[a,b]", "+data.generator.seed=1"]
    result = run_stage("train", project, *chosen)
    assert result.returncode == 2
    [line] = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert line.startswith("error: data.generator.seed is not a key of data=folder;"), line


def test_a_key_another_option_declares_is_left_to_hydra_with_its_full_name(project):
    result = run_stage("train", project, "model.width=3")  # resnet's, not unet's: Hydra says add + (then refused)
    assert result.returncode != 0
    assert "Could not override 'model.width'" in result.stderr and "Key 'width' is not in struct" in result.stderr


def test_cfg_job_prints_resolved_config(project):
    result = run_stage("train", project, "optimizer.lr=1e-4", "--cfg", "job", "--resolve")
    assert result.returncode == 0, result.stderr
    assert "lr: 0.0001" in result.stdout
    assert f"root: {project}" in result.stdout


def test_two_run_modes_are_one_line_where_hydra_raises(project):
    """-m with --cfg job (to see a sweep's config) makes Hydra raise a ValueError with its traceback."""
    result = run_stage("train", project, "-m", "experiment=segmentation_heads", "--cfg", "job")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.stderr.strip() == (
        "error: --multirun and --cfg cannot be combined: a command runs one of --multirun, --cfg, --info, --run, "
        "--shell-completion; to see one job of the sweep, give its values as plain overrides without -m "
        "(model=unet --cfg job)"
    )


@pytest.mark.parametrize("extra", [[], ["trainer=debug"]])
def test_a_missing_mandatory_value_is_one_line_naming_the_key(project, extra):
    """data=folder without data.root: the key and an example, not a MissingMandatoryValue traceback (and with
    trainer=debug not a data/folder_debug path the user never gave)."""
    result = run_stage("train", project, "data=folder", "data.classes=[a,b,c]", *extra)
    assert result.returncode == 2, result.stderr[-2000:]
    [line] = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "data.root is missing" in line and "e.g. data.root=/path/to/your/set" in line, line
    assert "Traceback" not in result.stderr and "folder_debug" not in result.stderr


def test_the_cnn_command_runs_each_stage_and_answers_help_without_tensorflow(project):
    """`cnn train --help` and `--cfg job` never import TensorFlow (they answered in 14 s when they did)."""
    import subprocess
    import sys

    probe = (  # Hydra ends --help and --cfg with sys.exit: report what was imported at exit
        "import atexit, sys; from pipeline.commands.cli import main; heavy = ('tensorflow', 'keras', 'mlflow');"
        "atexit.register(lambda: print('LOADED', sorted(m for m in heavy if m in sys.modules))); main(sys.argv[1:])"
    )
    for args in (["train", "--help"], ["predict", "--cfg", "job", "source=x", "input_dir=y"]):
        result = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert "LOADED []" in result.stdout, result.stdout[-500:]
    result = subprocess.run([sys.executable, "-m", "pipeline.commands.cli", "trian"], capture_output=True, text=True)
    assert result.returncode == 2 and "error: cnn trian: unknown command; valid: train, prepare" in result.stderr


@pytest.mark.parametrize(
    ("stage", "overrides", "expected"),
    [
        ("evaluate", ["source=x", "split=training"], "split='training' is unknown; valid: train, val, test"),
        ("predict", ["source=x", "input_dir=y", "mode=zoom"], "mode='zoom' is unknown; valid: resize, tile"),
        ("predict", ["source=x", "input_dir=y", "tile_overlap=1.5"], "tile_overlap=1.5 is invalid"),
        ("visualize", ["source=x", "num_images=0"], "num_images=0 is invalid: must be a positive integer"),
        ("visualize", ["source=x", "occlusion.patch=-2"], "occlusion.patch=-2 is invalid: must be null or a positive"),
        ("transfer", ["transfer.source=x", "transfer.strategy=freeze"], "transfer.strategy='freeze' is unknown"),
        ("transfer", ["transfer.source=x", "transfer.lr_factor=0"], "transfer.lr_factor=0 is invalid"),
        ("prepare", ["data.image_size=0"], "data.image_size=0 is invalid: must be a positive integer"),
        ("evaluate", ["split=test"], "source is missing: it has no default; give it on the command line, e.g. source="),
    ],
)
def test_every_stage_refuses_its_bad_values_before_any_work(project, stage, overrides, expected):
    """One schema checks every stage's keys (source=x would fail later: the schema speaks first)."""
    result = run_here(stage, project, *overrides)
    assert result.returncode == 2, result.stderr[-2000:]
    [line] = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert expected in line, line
    assert not (project / "data").exists() and not (project / "mlflow.db").exists()


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [  # a server nobody runs, in a single run and a sweep; a study database nobody runs
        ([], {"MLFLOW_TRACKING_URI": "http://127.0.0.1:9"}, "tracking.uri=http://127.0.0.1:9: no MLflow server"),
        (["sweep=grid", "-m"], {"MLFLOW_TRACKING_URI": "http://127.0.0.1:9"}, "no MLflow server answers there"),
        (
            ["sweep=optuna", "hydra.sweeper.storage=postgresql+psycopg://nobody@127.0.0.1:9/optuna", "-m"],
            {},
            "hydra.sweeper.storage=postgresql+psycopg://nobody@127.0.0.1:9/optuna: cannot open the Optuna study",
        ),
        (  # a store that cannot be created: Hydra would turn the callback's exception into a warning and go on
            ["sweep=grid", "-m"],
            {"MLFLOW_TRACKING_URI": "sqlite:////proc/no-such-place/mlflow.db"},
            "the sweep could not record itself (its MLflow parent run), so it stopped: ",
        ),
        (  # a search space the model lacks: refused before any parent run or study exists
            ["sweep=optuna", "model.width=choice(8,16)", "-m"],
            {},
            "the command line sweeps model.width, which model=unet does not have (its keys: name, depth, base_filters",
        ),
    ],
)
def test_an_unreachable_store_fails_before_any_training_in_one_line(project, args, env, expected):
    result = run_here("train", project, *TINY, *args, env=env)
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and expected in errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr and "epoch" not in result.stdout.lower()


def test_a_refusal_run_in_this_process_leaves_keras_precision_as_it_was(project):
    """run_here's stage sets the mixed policy before its data check refuses the augmentation; the next test in this
    worker must still build float32 models."""
    import keras

    result = run_here("train", project, *TINY, "trainer.precision=mixed_bfloat16", "augment.train=[{name:Blurr}]")
    assert result.returncode == 2 and "'Blurr' is not an albumentations transform" in result.stderr
    assert keras.config.dtype_policy().name == "float32"


def test_a_stage_run_in_this_process_leaves_mlflow_s_store_as_it_was(project):
    """evaluate points MLflow's global tracking URI at the project's store before it looks the source up; the
    next test in this worker must find MLflow as a new process would."""
    before, environment = mlflow.get_tracking_uri(), os.environ.get("MLFLOW_TRACKING_URI")
    result = run_here("evaluate", project, "source=0123456789abcdef")
    assert result.returncode == 2 and f"not found in the MLflow store at sqlite:///{project}/mlflow.db" in result.stderr
    assert mlflow.get_tracking_uri() == before and os.environ.get("MLFLOW_TRACKING_URI") == environment
