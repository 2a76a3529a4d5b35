"""The config: where it lives (conf/), the resolvers it uses, the stage wrapper every command runs in (one-line
errors, SIGTERM as Ctrl-C, the misspelt-override check), and typed checks of a call's options; `schema`
checks every value before anything runs, `options` names what the config may choose.

Imports no Keras: composing and checking any stage's config leaves keras, tensorflow and jax unloaded
(tests/test_validation.py). May import data, models and tasks for their registries' names (the model's dry
build imports Keras inside the function).
"""

import contextlib
import difflib
import functools
import gc
import inspect
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from pipeline.errors import ConfigError, PipelineError

log = logging.getLogger(__name__)
PACKAGE_DIR = Path(__file__).resolve().parents[1]  # src/pipeline


ROOT_VARIABLE = "CNN_PIPELINE_ROOT"


def project_root() -> Path:
    """Where data/, outputs/ and the default store mlflow.db go: $CNN_PIPELINE_ROOT, else the current folder
    (as Hydra's outputs and MLflow's mlruns do), whether the package is a checkout or an installed wheel."""
    return Path(os.environ.get(ROOT_VARIABLE) or Path.cwd()).resolve()


def checkout() -> Path | None:
    """The source checkout this package runs from (an editable install), else None."""
    folder = PACKAGE_DIR.parents[1]
    return folder if (folder / "pyproject.toml").is_file() and (folder / "conf").is_dir() else None


def conf_dir() -> str:
    """The copy of conf/ packaged inside a wheel install, or the checkout's conf/."""
    packaged = PACKAGE_DIR / "conf"
    return str(packaged if packaged.is_dir() else checkout() / "conf")


def group_options(group: str, roots: list[Path] = ()) -> tuple[str, ...]:
    """A config group's options, sorted: the names of conf/<group>/*.yaml (model -> alexnet, ..., unet, vgg11),
    and of <root>/<group>/*.yaml for each config folder in `roots` (those the command line adds)."""
    return tuple(sorted({p.stem for root in (conf_dir(), *roots) for p in Path(root, group).glob("*.yaml")}))


def option_file(group: str, option: str, roots: list[Path] = ()) -> Path | None:
    """<group>/<option>.yaml (an option's path, a/b, too) in conf/, else in the first config folder of `roots`
    that has it (Hydra's search order); None where none has it."""
    found = (path for root in (conf_dir(), *roots) if (path := Path(root, group, f"{option}.yaml")).is_file())
    return next(found, None)


def compose(overrides: list[str] = (), config_name: str = "config") -> DictConfig:
    """The config a stage would get for these command-line overrides (Hydra's compose API, no run dir)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=list(overrides))


OmegaConf.register_new_resolver("project_root", lambda: str(project_root()), replace=True)


def stage_main(config_name: str):
    """A stage's entry point: hydra.main on conf/<config_name>.yaml, wrapped by `stage` (one-line errors), and
    run from the command line, a misspelt key without + (trainer.epoch=3) answered with the did-you-mean line
    before Hydra composes anything (Hydra's own answer is to add +, which would train with the typo ignored)."""
    import hydra

    def decorate(task: Callable[[DictConfig], float | None]):
        composed = hydra.main(version_base="1.3", config_path=conf_dir(), config_name=config_name)(stage(task))

        @functools.wraps(task)
        def entry(*args, **kwargs):
            if not args and not kwargs:  # the command line (a notebook passes a composed config)
                arguments = sys.argv[1:]
                misspelt = argument_problem(arguments)
                if misspelt:
                    print(f"error: {misspelt}", file=sys.stderr)
                    raise SystemExit(2)
            return composed(*args, **kwargs)

        return entry

    return decorate


def job_place():
    """The running Hydra job's place (pipeline.config.spec.JobPlace): its sweep folder and number in a multirun,
    and its command-line overrides; the default outside Hydra (a notebook calling a command's main)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from pipeline.config.spec import JobPlace

    if not HydraConfig.initialized():
        return JobPlace()
    hydra = HydraConfig.get()
    overrides = tuple(str(o) for o in hydra.overrides.task)
    if hydra.mode != RunMode.MULTIRUN:
        return JobPlace(overrides=overrides)
    return JobPlace(Path(hydra.sweep.dir), int(hydra.job.num), overrides)


def instantiate(record: dict):
    """An object from a `_target_` record (Hydra's instantiate), for the library, which does not import Hydra."""
    from hydra.utils import instantiate as hydra_instantiate

    return hydra_instantiate(record)


def default_tracking_uri() -> str:
    """tracking.uri of the project's config, so a command without a config of its own (compare) reads the store
    the stages write."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        return str(compose(config_name="config").tracking.uri)


def added_config_folders(arguments: list[str]) -> list[Path] | None:
    """The config folders the command line adds beside conf/: `--config-dir X` (-cd) and hydra.searchpath's
    file:// entries. None where it adds one this check cannot read: a pkg:// entry, or --config-path (-cp),
    which puts another folder in conf/'s place."""
    folders = []
    for at, argument in enumerate(arguments):
        flag, equals, value = argument.partition("=")
        if flag in ("--config-dir", "-cd"):
            value = value if equals else (arguments[at + 1] if at + 1 < len(arguments) else "")
            folders.append(Path(value).expanduser())
        elif flag in ("--config-path", "-cp"):
            return None
        elif flag.lstrip("+") == "hydra.searchpath":
            for entry in (part.strip().strip("'\"") for part in value.strip().strip("[]").split(",")):
                if entry and not entry.startswith("file://"):
                    return None
                if entry:
                    folders.append(Path(entry.removeprefix("file://")).expanduser())
    return folders


# Hydra's run modes, of which a command line takes one (Hydra raises a ValueError, a traceback, at a second)
MODES = {"-m": "--multirun", "--multirun": "--multirun", "-c": "--cfg", "--cfg": "--cfg", "--info": "--info",
         "-r": "--run", "--run": "--run", "-sc": "--shell-completion",
         "--shell-completion": "--shell-completion"}  # fmt: skip


def two_modes(arguments: list[str]) -> str | None:
    """The complaint about a command line that asks Hydra for two run modes (-m with --cfg job, to see a sweep's
    configs): one line that says what to do instead."""
    modes = list(dict.fromkeys(MODES[a] for a in arguments if a in MODES))
    if len(modes) < 2:
        return None
    hint = ("; to see one job of the sweep, give its values as plain overrides without -m (model=unet --cfg job)"
            if "--multirun" in modes and "--cfg" in modes else "")  # fmt: skip
    every = ", ".join(dict.fromkeys(MODES.values()))
    return f"{' and '.join(modes)} cannot be combined: a command runs one of {every}{hint}"


def argument_problem(arguments: list[str]) -> str | None:
    """The one line about command-line arguments Hydra would answer badly (two run modes, a misspelt option or
    key), checked before anything composes; None when there is none."""
    return two_modes(arguments) or misspelt_choice(arguments) or misspelt_override(arguments)


def misspelt_choice(arguments: list[str]) -> str | None:
    """The complaint about the first `group=option` (model=unett, or one of a multirun's model=unet,segnett)
    whose option neither conf/<group> nor a config folder the command line adds (--config-dir, hydra.searchpath)
    holds, with the nearest option and the valid ones: one line, where Hydra's own answer is eight with its search
    path. Left to Hydra where a folder is added that this cannot read (a pkg:// path, --config-path), and for
    sweep functions, lists and interpolations. `group=null`, which Hydra answers with a traceback, is refused the
    same way."""
    added = added_config_folders(arguments)
    if added is None:
        return None
    for argument in arguments:
        if argument.startswith(("-", "~")) or "=" not in argument:
            continue
        key, value = argument.split("=", 1)
        group = key.lstrip("+")
        if "." in group or group.startswith("hydra"):
            continue
        own = Path(conf_dir(), group)
        folders = [folder for folder in (own, *(Path(a, group) for a in added)) if folder.is_dir()]
        if not folders:
            continue
        if any(mark in value for mark in "()[]{}$'\""):
            continue
        for choice in (part.strip() for part in value.split(",")):
            if choice == "" or option_file(group, choice, added) is not None:
                continue
            options = group_options(group, added)
            valid = f"valid: {', '.join(options)}"
            if choice == "null":  # Hydra's answer is a ValueError traceback
                return f"{group}=null: a config group takes an option, not null (~{group} leaves it out); {valid}"
            nearest = difflib.get_close_matches(choice, options, n=1, cutoff=0.6)
            hint = f"did you mean {group}={nearest[0]}? " if nearest else ""
            places = " and ".join(f"conf/{group}" if folder == own else str(folder) for folder in folders)
            has = "has" if len(folders) == 1 else "have"
            return f"{group}={choice}: {places} {has} no option {choice!r}; {hint}{valid}"
    return None


def misspelt_override(arguments: list[str]) -> str | None:
    """The complaint about the first override `group.key=value` (no +, ++ or ~) whose key no config file of that
    group declares, with the nearest declared key; None when every key is declared somewhere. A model option in
    a config folder the command line adds declares keys too (its builder checks them); the other groups' keys
    are those conf/ declares, the ones the pipeline reads."""
    from pipeline.config.schema import CHECKED_GROUPS, declared_keys, model_keys

    added = added_config_folders(arguments)
    for argument in arguments:
        if argument.startswith(("-", "+", "~")) or "=" not in argument:
            continue
        key = argument.split("=", 1)[0]
        group, _, rest = key.partition(".")
        if not rest or group not in (*CHECKED_GROUPS, "model") or (group == "model" and added is None):
            continue
        if group == "model":  # its builder checks the keys: those of an added folder's options count
            roots, known = tuple(added), model_keys(tuple(added))
        else:  # the keys the pipeline reads
            roots, known = (), declared_keys()[group]
        if rest in known or any(k.startswith(rest + ".") for k in known):
            continue
        nearest = difflib.get_close_matches(rest, sorted(known), n=1, cutoff=0.6)
        hint = f"did you mean {group}.{nearest[0]}? " if nearest else ""
        valid = ", ".join(sorted(k for k in known if "." not in k))
        places = " or ".join([f"conf/{group}", *(str(Path(r, group)) for r in roots if Path(r, group).is_dir())])
        return f"{key} is not a key of {group} (in any {places} option); {hint}valid: {valid}"
    return None


def stage(task: Callable[[DictConfig], float | None]) -> Callable[[DictConfig], float | None]:
    """Turn the project's own errors into one line on stderr and exit status 2, instead of a traceback;
    SIGTERM (a scheduler's or `kill`'s stop) unwinds like Ctrl-C so no MLflow run is left RUNNING."""

    @functools.wraps(task)
    def wrapper(cfg: DictConfig):
        in_main_thread = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, _interrupt) if in_main_thread else None
        try:
            with one_line_errors():
                return task(cfg)
        except KeyboardInterrupt as stop:  # Ctrl-C, or SIGTERM raised as Terminated
            number = signal.SIGTERM if isinstance(stop, Terminated) else signal.SIGINT
            how = "SIGTERM" if number == signal.SIGTERM else "Ctrl-C (SIGINT)"
            print(f"error: stopped by {how} (an open MLflow run was marked KILLED; trainer.resume=true continues "
                  "a training run)", file=sys.stderr)  # fmt: skip
            if _single_run():  # the run is ended: skip the interpreter's teardown, where the backend's input
                logging.shutdown()  # threads, stopped mid-batch, can crash the process (SIGSEGV instead of 143)
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(128 + number)
            raise SystemExit(128 + number) from None
        finally:
            if in_main_thread:
                signal.signal(signal.SIGTERM, previous)

    return wrapper


@contextlib.contextmanager
def one_line_errors(doing: str | None = None):
    """The project's errors as one line on stderr and exit status 2, instead of a traceback: the one wrapper of
    every command, callback and sweeper. With `doing` (Hydra's callbacks, the sweeper) any other exception
    stops the work too, named in one line: Hydra turns an exception in a callback into a warning and goes on
    launching jobs, which would then run un-nested or unrecorded. SystemExit is not an Exception, so Hydra
    lets it through."""
    try:
        yield
    except PipelineError as err:
        print(f"error: {err}", file=sys.stderr)
        _release(err)
        raise SystemExit(2) from None
    except Exception as err:
        if doing is None:
            raise
        first = str(err).strip().splitlines()[0][:300] if str(err).strip() else ""
        print(f"error: {doing} stopped: {type(err).__name__}: {first}", file=sys.stderr)
        raise SystemExit(2) from None


def _release(err: BaseException) -> None:
    """Let go of what the failed work's frames still hold, now rather than at the interpreter's teardown: the
    SystemExit that follows keeps `err` (as its context) and so every frame it unwound, and a TensorFlow input
    pipeline among their locals, finalized only once Python is shutting down, logs a warning after the one line.
    Keras hides its own frames from the traceback it re-raises, so each frame's callers are cleared too."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:  # the error, and those it was raised from or during
        seen.add(id(err))
        tb = err.__traceback__
        while tb is not None:
            frame = tb.tb_frame
            while frame is not None:
                try:
                    frame.clear()
                except RuntimeError:  # still running (this one and its callers) or a suspended generator
                    break
                frame = frame.f_back
            tb = tb.tb_next
        err = err.__cause__ or err.__context__
    gc.collect()


def _single_run() -> bool:
    """True in a plain `cnn <stage>` run; false in a sweep (its sweeper still ends its parent run) or a notebook."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.RUN
    except (ImportError, ValueError):
        return False


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C: `tracking.run` then ends the open run KILLED instead of leaving it RUNNING."""


def _interrupt(signum, frame):
    raise Terminated(signal.Signals(signum).name)


_TYPE_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def _matches(value, annotation) -> bool:
    if annotation is inspect.Parameter.empty:
        return True
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation in (bool, str):
        return isinstance(value, annotation)
    return True  # unions, tuples, ...: left to the function itself


def checked_call(fn: Callable, kwargs: dict, prefix: str, **fixed):
    """Call fn(**fixed, **kwargs) after checking each config key is a parameter of fn of the right type.

    Unknown keys and wrong types become ConfigErrors that name `prefix.key` and what is valid.
    """
    params = {name: p for name, p in inspect.signature(fn).parameters.items() if name not in fixed}
    for key, value in kwargs.items():
        if key not in params:
            nearest = difflib.get_close_matches(key, list(params), n=1, cutoff=0.6)
            hint = f"; did you mean {prefix}.{nearest[0]}?" if nearest else ""
            raise ConfigError(f"{prefix}.{key} is not an option of {fn.__name__}; valid: {', '.join(params)}{hint}")
        annotation = params[key].annotation
        if not _matches(value, annotation):
            raise ConfigError(f"{prefix}.{key}={value!r} is invalid: must be {_TYPE_NAMES[annotation]}")
    return fn(**fixed, **kwargs)


def positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def positive_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


SECONDS = {"s": 1, "m": 60, "h": 3600}


def parse_seconds(value) -> float:
    """trainer.max_time: seconds as a number, or a number with s, m or h (90m, 2h, 1.5h)."""
    text = str(value).strip().lower()
    try:
        seconds = float(text[:-1]) * SECONDS[text[-1]] if text and text[-1] in SECONDS else float(text)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise ConfigError(f"trainer.max_time={value!r} is invalid; valid: null, seconds > 0, or e.g. 90m, 2h")
    return seconds
