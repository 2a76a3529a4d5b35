"""The config's schema, checked before any data is prepared or any run is opened.

Each group's keys are checked against what they may hold (SCHEMA); the model is then built once "dry"
on the configured input shape, so impossible conv arithmetic (an output size < 1 at some layer) stops
at once with the layer named. Builder keyword arguments (model, loss, optimizer options) are checked
against the builder's signature by config.checked_call. Keys no config file declares, and mandatory
values (???) left unset, are refused first. This is the one place config values are checked: the stages
call check_schema (or validate_config) before any work. Every failure is one ConfigError that names
the key, the value, and what is valid.
"""

import difflib
import traceback
from collections.abc import Callable
from functools import cache
from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf

from pipeline.config import conf_dir, group_options, option_file, parse_seconds, positive_int, positive_number
from pipeline.config.options import (
    CACHE_MODES,
    EXPORT_FORMATS,
    FITS,
    INTENSITY_MODES,
    LR_SCALING,
    OPTIMIZERS,
    PRECISIONS,
    PREDICT_MODES,
    SCHEDULES,
    SPLITS,
    STRATEGIES,
    TILE_BLENDS,
    TRANSFER_STRATEGIES,
    TTA_MODES,
)
from pipeline.data.samples import parse_bytes
from pipeline.data.sources import READERS
from pipeline.errors import ConfigError
from pipeline.models import MODELS, build_model, task_of_model
from pipeline.tasks import TASKS

BAD_FILE_POLICIES = ("error", "skip")
GRAYSCALE_POLICIES = ("error", "convert")
ABSENT = object()
# groups whose keys are all declared in conf/<group>/*.yaml (model keys are checked against the builder)
CHECKED_GROUPS = ("data", "trainer", "optimizer", "loss", "tracking", "paths", "augment", "transfer")
EXAMPLES = {  # shown when a mandatory (???) value is missing
    "data.root": "data.root=/path/to/your/set",
    "data.classes": "'data.classes=[background,cat,dog]'",
    "source": "source=<run id | runs:/<run id>/model | models:/<name>@<alias> | models:/<model id> | file.keras>",
    "name": "name=shapes-unet",
    "input_dir": "input_dir=/path/to/images",
    "transfer.source": "transfer.source=<run id | latest:<experiment> | MobileNetV2 | KerasHub preset>",
}


def _integer(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _byte_size(value) -> bool:
    try:
        parse_bytes(value)
    except ConfigError:
        return False
    return True


def _optional(check: Callable[[object], bool]) -> Callable[[object], bool]:
    return lambda value: value is None or check(value)


def _class_list(value) -> bool:
    return value is None or (len(value) >= 2 and len({str(c) for c in value}) == len(value))


def _seconds(value) -> bool:
    try:
        parse_seconds(value)
    except ConfigError:
        return False
    return True


def _choice(options: tuple) -> tuple[Callable[[object], bool], str]:
    return (lambda value: value in options), "unknown; valid: " + ", ".join(map(str, options))


def _rule(check: Callable[[object], bool], valid: str) -> tuple[Callable[[object], bool], str]:
    return check, f"invalid: must be {valid}"


NON_NEGATIVE = _rule(lambda v: _number(v) and v >= 0, "a number >= 0")

# key -> (check, what the message says after "key=value is"); keys a group may lack are skipped
SCHEMA: dict[str, tuple[Callable[[object], bool], str]] = {
    "seed": _rule(_integer, "an integer"),
    "data.name": _rule(lambda v: isinstance(v, str) and v != "", "a non-empty string"),
    "data.task": _choice(tuple(TASKS)),
    "data.layout": _choice(tuple(READERS)),
    "data.classes": _rule(_class_list, "a list of at least 2 distinct class names"),
    "data.image_size": _rule(positive_int, "a positive integer"),
    "data.channels": _choice((1, 3, "auto")),
    "data.intensity.mode": _choice(INTENSITY_MODES),
    "data.intensity.range": _rule(
        lambda v: v is None or (len(v) == 2 and all(_number(x) for x in v) and v[0] < v[1]), "null or [lo, hi], lo < hi"
    ),
    "data.intensity.percentiles": _rule(
        lambda v: len(v) == 2 and all(_number(x) for x in v) and 0 <= v[0] < v[1] <= 100,
        "[lo, hi] with 0 <= lo < hi <= 100",
    ),
    "data.mask_values": _rule(
        lambda v: v is None or (all(_integer(x) and 0 <= x <= 65535 for x in v) and len(set(v)) == len(v)),
        "null or a list of distinct mask values, one per class (e.g. [0,255])",
    ),
    "data.class_colors": _rule(
        lambda v: v is None or all(len(c) == 3 and all(_integer(x) and 0 <= x <= 255 for x in c) for c in v),
        "null or a list of [r,g,b] colours (0..255), one per class",
    ),
    "data.strict": _rule(lambda v: isinstance(v, bool), "true or false"),
    "loss.ignore_label": _rule(lambda v: v is None or (_integer(v) and 0 <= v <= 255), "null or a label 0..255"),
    "data.val_fraction": _rule(lambda v: _number(v) and 0 < v < 1, "a number in (0, 1)"),
    "data.test_fraction": _rule(lambda v: _number(v) and 0 < v < 1, "a number in (0, 1)"),
    "data.split_seed": _rule(_integer, "an integer"),
    "data.splits.train": _rule(_optional(positive_int), "a positive integer"),
    "data.splits.val": _rule(_optional(positive_int), "a positive integer"),
    "data.splits.test": _rule(_optional(positive_int), "a positive integer"),
    "data.on_bad_file": _choice(BAD_FILE_POLICIES),
    "data.grayscale": _choice(GRAYSCALE_POLICIES),
    "data.workers": _rule(lambda v: v == "auto" or positive_int(v), "auto or a positive integer"),
    "data.cache": _choice(CACHE_MODES),
    "data.cache_budget": _rule(_byte_size, "a size such as 2GiB, 512MiB or a number of bytes"),
    "data.fit": _choice(FITS),
    "model.name": _choice(tuple(sorted(MODELS))),
    "trainer.epochs": _rule(positive_int, "a positive integer"),
    "trainer.batch_size": _rule(positive_int, "a positive integer"),
    "trainer.precision": _choice(PRECISIONS),
    "trainer.jit_compile": _rule(lambda v: v == "auto" or isinstance(v, bool), "auto, true or false"),
    "trainer.deterministic": _rule(lambda v: isinstance(v, bool), "true or false"),
    "trainer.resume": _rule(lambda v: isinstance(v, bool), "true or false"),
    "trainer.strategy": _choice(STRATEGIES),
    "trainer.lr_scaling": _choice(LR_SCALING),
    "trainer.memory_growth": _rule(lambda v: isinstance(v, bool), "true or false"),
    "trainer.monitor": _rule(lambda v: v is None or isinstance(v, str), "null or a metric name such as val_loss"),
    "trainer.verbose": _choice(("auto", 0, 1, 2)),
    "trainer.steps_per_execution": _rule(positive_int, "a positive integer"),
    "trainer.early_stopping.patience": _rule(_optional(positive_int), "null (off) or a positive number of epochs"),
    "trainer.early_stopping.min_delta": NON_NEGATIVE,
    "trainer.max_time": _rule(lambda v: v is None or _seconds(v), "null, seconds > 0, or e.g. 90m, 2h"),
    "trainer.stop_at": _rule(lambda v: v is None or _number(v), "null (off) or the monitored metric's target value"),
    "optimizer.use_ema": _rule(lambda v: isinstance(v, bool), "true or false"),
    "optimizer.ema_momentum": _rule(lambda v: _number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "optimizer.gradient_accumulation_steps": _rule(
        lambda v: v is None or (_integer(v) and v >= 2), "null (off) or an integer >= 2"
    ),  # fmt: skip
    "loss.label_smoothing": _rule(lambda v: _number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "optimizer.name": _choice(tuple(OPTIMIZERS)),
    "optimizer.lr": _rule(positive_number, "a number > 0"),
    "optimizer.schedule": _choice(SCHEDULES),
    "optimizer.warmup_epochs": NON_NEGATIVE,
    "loss.ce": NON_NEGATIVE,
    "loss.dice": NON_NEGATIVE,
    "loss.focal": NON_NEGATIVE,
    "loss.lovasz": NON_NEGATIVE,
    "loss.gamma": NON_NEGATIVE,
    "tracking.experiment": _rule(lambda v: isinstance(v, str) and v != "", "a non-empty string"),
    "tracking.num_examples": _rule(lambda v: _integer(v) and v >= 0, "an integer >= 0"),
    "tracking.log_model": _rule(lambda v: isinstance(v, bool), "true or false"),
    "tracking.system_metrics": _rule(_optional(positive_number), "null (off) or a sampling interval in seconds > 0"),
    "transfer.source": _rule(
        lambda v: isinstance(v, str) and v != "",
        "a run id, a model URI or file, latest:<experiment>, a keras.applications name such as MobileNetV2, "
        "or a KerasHub preset or its folder",
    ),
    "transfer.strategy": _choice(TRANSFER_STRATEGIES),
    "transfer.fine_tune_blocks": _rule(positive_int, "a positive integer"),
    "transfer.warmup_epochs": _rule(lambda v: _integer(v) and v >= 0, "an integer >= 0"),
    "transfer.lr_factor": _rule(positive_number, "a number > 0"),
    "transfer.head_dropout": _rule(lambda v: _number(v) and 0 <= v < 1, "a number in [0, 1)"),
    # the evaluate, predict and visualize stages' own keys (conf/<stage>.yaml)
    "split": _choice(SPLITS),
    "name": _rule(lambda v: isinstance(v, str) and v.strip() != "", "a non-empty model name"),
    "alias": _rule(lambda v: v is None or isinstance(v, str), "null or an alias such as champion"),
    "tta": _rule(
        lambda v: isinstance(v, bool) or v in TTA_MODES, f"{', '.join(TTA_MODES)} (true = flips, false = none)"
    ),
    "json": _rule(lambda v: isinstance(v, bool), "true or false"),
    "refresh": _rule(lambda v: isinstance(v, bool), "true or false"),
    "batch_size": _rule(positive_int, "a positive integer"),
    "num_examples": _rule(lambda v: _integer(v) and v >= 0, "an integer >= 0"),
    "mode": _choice(PREDICT_MODES),
    "tile_overlap": _rule(lambda v: _number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "num_logged": _rule(lambda v: _integer(v) and v >= 0, "an integer >= 0"),
    "tile_blend": _choice(TILE_BLENDS),
    "background": _rule(lambda v: v is None or (_integer(v) and v >= 0), "null or a class index >= 0"),
    "num_images": _rule(positive_int, "a positive integer"),
    "format": _choice((*EXPORT_FORMATS, "all")),
    "artefact": _rule(lambda v: v is None or (isinstance(v, str) and v != ""), "null or the path of an exported file"),
    "latency_runs": _rule(positive_int, "a positive integer"),
    "tolerance": _rule(positive_number, "a number > 0"),
    "max_metric_delta": _rule(lambda v: v is None or (_number(v) and v >= 0), "null or a number >= 0"),
    "max_channels": _rule(positive_int, "a positive integer"),
    "maximization.max_layers": _rule(positive_int, "a positive integer"),
    "maximization.filters": _rule(positive_int, "a positive integer"),
    "maximization.steps": _rule(positive_int, "a positive integer"),
    "deconv.top": _rule(positive_int, "a positive integer"),
    "deconv.max_layers": _rule(positive_int, "a positive integer"),
    "occlusion.patch": _rule(_optional(positive_int), "null or a positive integer"),
    "occlusion.stride": _rule(_optional(positive_int), "null or a positive integer"),
}


def check_missing(cfg: DictConfig) -> None:
    """A mandatory value (??? in the config) that was not given: one line with the key and an example."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        key = missing[0]
        example = EXAMPLES.get(key, f"{key}=<value>")
        others = f" (also missing: {', '.join(missing[1:])})" if len(missing) > 1 else ""
        raise ConfigError(f"{key} is missing: it has no default; give it on the command line, e.g. {example}{others}")


def _leaf_keys(node, prefix: str) -> set[str]:
    """Dotted keys of a nested mapping, down to its leaves (lists are leaves)."""
    if not isinstance(node, dict):
        return {prefix}
    keys = {prefix} if prefix else set()
    for key, value in node.items():
        keys |= _leaf_keys(value, f"{prefix}.{key}" if prefix else str(key))
    return keys


def _yaml(path: Path) -> tuple[dict, str]:
    text = path.read_text()
    return yaml.safe_load(text) or {}, text


@cache
def option_keys(group: str, option: str, roots: tuple[Path, ...] = ()) -> frozenset[str]:
    """The keys <group>/<option>.yaml declares, with those of the options it builds on (its defaults): the file
    from conf/, else from the first config folder in `roots` (those the command line adds) that has it."""
    path = option_file(group, option, roots)
    if path is None:
        return frozenset()
    content, _ = _yaml(path)
    keys = set()
    for parent in content.pop("defaults", None) or []:
        if isinstance(parent, str) and parent != "_self_" and "/" not in parent:
            keys |= option_keys(group, parent, roots)
    return frozenset(keys | _leaf_keys(content, ""))


@cache
def global_keys() -> dict[str, frozenset[str]]:
    """The keys of each checked group that a global config sets (an experiment, a sweep recipe, a trainer preset,
    a stage config: `# @package _global_` or top-level files), and those SCHEMA knows: valid whatever is chosen."""
    found: dict[str, set[str]] = {group: set() for group in CHECKED_GROUPS}
    root = Path(conf_dir())
    for path in root.rglob("*.yaml"):
        content, text = _yaml(path)
        content.pop("defaults", None)
        if "@package _global_" in text or len(path.relative_to(root).parts) == 1:
            for group in CHECKED_GROUPS:
                if isinstance(content.get(group), dict):
                    found[group] |= _leaf_keys(content[group], "")
    for key in SCHEMA:
        group, _, rest = key.partition(".")
        if group in found and rest:  # the key and the nodes above it (early_stopping of early_stopping.patience)
            parts = rest.split(".")
            found[group] |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
    return {group: frozenset(keys) for group, keys in found.items()}


@cache
def declared_keys() -> dict[str, frozenset[str]]:
    """Every key each checked group declares in any of its conf/ options, or that a global config or SCHEMA sets:
    the keys the pipeline reads (an option in a folder the command line adds may use them, not invent others)."""
    return {
        group: global_keys()[group].union(*(option_keys(group, option) for option in group_options(group)))
        for group in CHECKED_GROUPS
    }


@cache
def model_keys(roots: tuple[Path, ...] = ()) -> frozenset[str]:
    """Every key any model option declares, in conf/model or the `roots`' model folders (read from the YAML
    only; the builders check their own)."""
    return frozenset().union(*(option_keys("model", option, roots) for option in group_options("model", roots)))


def known_keys(choices: dict | None = None, roots: tuple[Path, ...] = ()) -> dict[str, frozenset[str]]:
    """The keys each checked group may hold: those of the option chosen for it (`choices`, Hydra's
    runtime.choices; in conf/ or a folder in `roots`) that the group declares, with what global configs and
    SCHEMA add; without choices, any option's."""
    declared = declared_keys()
    if not choices:
        return declared
    return {
        group: (option_keys(group, str(choices[group]), roots) & keys) | global_keys()[group]
        if choices.get(group)
        else keys
        for group, keys in declared.items()
    }


def added_folders_of_run() -> tuple[Path, ...]:
    """The config folders beside conf/ that the running Hydra app searches (--config-dir, hydra.searchpath,
    a searchpath plugin): its file:// sources, and its pkg:// ones that are folders on disk."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return ()
    folders = []
    for source in HydraConfig.get().runtime.config_sources:
        if source.schema == "file":
            folders.append(Path(source.path))
        elif source.schema == "pkg":
            folders.append(package_folder(source.path))
    main = Path(conf_dir()).resolve()
    return tuple(f for f in folders if f is not None and f.is_dir() and f.resolve() != main)


def package_folder(module: str) -> Path | None:
    """Where a pkg:// config source (a dotted package path) lies on disk; None if it is not a plain folder."""
    import importlib.util

    try:
        spec = importlib.util.find_spec(module.replace("/", "."))
    except (ImportError, ValueError):
        return None
    locations = list(spec.submodule_search_locations or []) if spec else []
    return Path(locations[0]) if len(locations) == 1 else None


def check_unknown_keys(cfg: DictConfig, choices: dict | None = None) -> None:
    """A key the chosen option does not declare (a typo added with +, e.g. +trainer.epoch=3, or a key of another
    option: +data.generator.seed=1 on data=folder) is refused, naming the nearest valid key. An option chosen from
    a folder the run adds beside conf/ (--config-dir, hydra.searchpath) may set the keys its group declares in
    conf/; one it invents (a typo in the user's file) is refused naming that file."""
    if choices is None:
        from hydra.core.hydra_config import HydraConfig

        choices = dict(HydraConfig.get().runtime.choices) if HydraConfig.initialized() else None
    roots = added_folders_of_run()
    container = OmegaConf.to_container(cfg, resolve=False)
    for group, known in known_keys(choices, roots).items():
        if not isinstance(container.get(group), dict):
            continue
        for key in sorted(_leaf_keys(container[group], "")):
            if key in known:
                continue
            nearest = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
            hint = f"did you mean {group}.{nearest[0]}? " if nearest else ""
            valid = ", ".join(sorted(k for k in known if "." not in k))
            chosen = f"{group}={choices[group]}" if choices and choices.get(group) else group
            path = option_file(group, str(choices[group]), roots) if choices and choices.get(group) else None
            if path is not None and not path.is_relative_to(conf_dir()):
                chosen += f" ({path})"
            raise ConfigError(f"{group}.{key} is not a key of {chosen}; {hint}valid: {valid}")


def check_schema(cfg: DictConfig) -> None:
    """Every key of SCHEMA that the config has, against what it may hold; unknown keys; missing values."""
    check_missing(cfg)
    check_unknown_keys(cfg)
    for key, (check, complaint) in SCHEMA.items():
        value = OmegaConf.select(cfg, key, default=ABSENT)
        if value is ABSENT:
            continue
        try:
            ok = check(value)
        except TypeError:
            ok = False
        if not ok:
            shown = list(value) if OmegaConf.is_list(value) else value
            raise ConfigError(f"{key}={shown!r} is {complaint}")
    model, data = OmegaConf.select(cfg, "model.name"), OmegaConf.select(cfg, "data.task")
    if model is not None and data is not None and "transfer" not in cfg:  # transfer: the model is its source's
        check_task(model, cfg.data.name, data)
    for check in CROSS_FIELD:
        check(cfg)


def check_transfer_warmup(cfg: DictConfig) -> None:
    """fine_tune and full train the head alone first: transfer.warmup_epochs must leave epochs to fine-tune."""
    strategy, warmup = OmegaConf.select(cfg, "transfer.strategy"), OmegaConf.select(cfg, "transfer.warmup_epochs")
    epochs = OmegaConf.select(cfg, "trainer.epochs")
    if strategy in ("fine_tune", "full") and not 0 < warmup < epochs:
        raise ConfigError(
            f"transfer.warmup_epochs={warmup} is invalid for {strategy}: must be in 1..trainer.epochs-1 "
            f"(trainer.epochs={epochs})"
        )


CROSS_FIELD = [check_transfer_warmup]  # checks that read several keys, after each key's own


def check_task(model_name: str, data_name: str, task: str) -> None:
    """The model's kind (segmentation, localization, classification) must be the data's task."""
    kind = task_of_model(model_name)
    if kind != task:
        valid = [m for m in MODELS if task_of_model(m) == task]
        raise ConfigError(
            f"model.name={model_name} is a {kind} model but data={data_name} is a {task} set; "
            f"valid for {task}: {', '.join(valid)}"
        )


def _failing_layer(err: BaseException):
    """The innermost Keras layer being called when err was raised (its name goes into the message)."""
    import keras

    layer = None
    for frame, _ in traceback.walk_tb(err.__traceback__):
        candidate = frame.f_locals.get("self")
        if isinstance(candidate, keras.layers.Layer) and not isinstance(candidate, keras.Model):
            layer = candidate
    return layer


def build_checked(name: str, input_shape: tuple[int, int, int], num_classes: int, options: dict):
    """build_model, with Keras' own shape errors (an output size < 1 at some layer) as a ConfigError."""
    import keras

    filtering = keras.config.is_traceback_filtering_enabled()
    keras.config.disable_traceback_filtering()  # keep the layer frames, to name the layer at fault
    try:
        return build_model(name, input_shape, num_classes, **options)
    except ConfigError:
        raise
    except (ValueError, TypeError) as err:
        layer = _failing_layer(err)
        where = f"layer {layer.name} ({layer.__class__.__name__})" if layer is not None else "a layer"
        message = str(err).strip().splitlines()[0]
        fits = _next_buildable_size(name, input_shape, num_classes, options)
        valid = f"e.g. data.image_size={fits}" if fits else "a larger data.image_size or a shallower model"
        raise ConfigError(
            f"model={name} cannot be built for data.image_size={input_shape[0]} "
            f"({input_shape[0]}x{input_shape[1]}x{input_shape[2]} inputs): {where} fails: {message}; valid: {valid}"
        ) from None
    finally:
        if filtering:
            keras.config.enable_traceback_filtering()


def _next_buildable_size(name: str, input_shape: tuple[int, int, int], num_classes: int, options: dict) -> int | None:
    for size in range(input_shape[0] + 1, input_shape[0] + 17):
        try:
            build_model(name, (size, size, input_shape[2]), num_classes, **options)
            return size
        except (ValueError, TypeError):
            continue
    return None


def dry_build(cfg: DictConfig) -> None:
    """Build the configured model on the configured input shape once, then forget it."""
    options = {k: v for k, v in OmegaConf.to_container(cfg.model, resolve=True).items() if k != "name"}
    classes = cfg.data.classes
    channels = cfg.data.get("channels", 3)
    shape = (cfg.data.image_size, cfg.data.image_size, 3 if channels == "auto" else channels)
    build_checked(cfg.model.name, shape, len(classes) if classes else 2, options)
    import keras

    kept = keras.distribution.distribution()  # clear_session forgets the data parallelism configured before
    keras.backend.clear_session()  # the real build then names and initialises its layers as without this check
    if kept is not None:
        keras.distribution.set_distribution(kept)


def validate_config(cfg: DictConfig) -> None:
    """Every check that needs no data: the schema (with the model against the data's task), then a dry
    build of the model (which imports Keras)."""
    check_schema(cfg)
    dry_build(cfg)
