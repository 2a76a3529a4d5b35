"""The config's schema, checked before any data is prepared or any run is opened.

Each group's keys are checked against what they may hold (SCHEMA); the model is then built once "dry"
on the configured input shape, so impossible conv arithmetic (an output size < 1 at some layer) stops
at once with the layer named. Builder keyword arguments (model, loss, optimizer options) are checked
against the builder's signature by config.checked_call. Every failure is one ConfigError that names
the key, the value, and what is valid.
"""

import traceback
from collections.abc import Callable

import keras
from omegaconf import DictConfig, OmegaConf

from pipeline.config import positive_int, positive_number
from pipeline.errors import ConfigError
from pipeline.models import MODELS, TASK_OF_MODEL, build_model
from pipeline.training import LR_SCALING, OPTIMIZERS, PRECISIONS, STRATEGIES

TASKS = ("segmentation", "classification", "localization")
LAYOUTS = ("folders", "oxford_pets", "digits", "glyphs", "image_folder", "mnist", "shapes_cls")
BAD_FILE_POLICIES = ("error", "skip")
GRAYSCALE_POLICIES = ("error", "convert")
ABSENT = object()


def _integer(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _optional(check: Callable[[object], bool]) -> Callable[[object], bool]:
    return lambda value: value is None or check(value)


def _class_list(value) -> bool:
    return value is None or (len(value) >= 2 and len({str(c) for c in value}) == len(value))


def _choice(options: tuple) -> tuple[Callable[[object], bool], str]:
    return (lambda value: value in options), "unknown; valid: " + ", ".join(map(str, options))


def _rule(check: Callable[[object], bool], valid: str) -> tuple[Callable[[object], bool], str]:
    return check, f"invalid: must be {valid}"


# key -> (check, what the message says after "key=value is"); keys a group may lack are skipped
SCHEMA: dict[str, tuple[Callable[[object], bool], str]] = {
    "seed": _rule(_integer, "an integer"),
    "data.name": _rule(lambda v: isinstance(v, str) and v != "", "a non-empty string"),
    "data.task": _choice(TASKS),
    "data.layout": _choice(LAYOUTS),
    "data.classes": _rule(_class_list, "a list of at least 2 distinct class names"),
    "data.image_size": _rule(positive_int, "a positive integer"),
    "data.channels": _choice((1, 3)),
    "data.val_fraction": _rule(lambda v: _number(v) and 0 < v < 1, "a number in (0, 1)"),
    "data.test_fraction": _rule(lambda v: _number(v) and 0 < v < 1, "a number in (0, 1)"),
    "data.split_seed": _rule(_integer, "an integer"),
    "data.splits.train": _rule(_optional(positive_int), "a positive integer"),
    "data.splits.val": _rule(_optional(positive_int), "a positive integer"),
    "data.splits.test": _rule(_optional(positive_int), "a positive integer"),
    "data.on_bad_file": _choice(BAD_FILE_POLICIES),
    "data.grayscale": _choice(GRAYSCALE_POLICIES),
    "model.name": _choice(tuple(sorted(MODELS))),
    "trainer.epochs": _rule(positive_int, "a positive integer"),
    "trainer.batch_size": _rule(positive_int, "a positive integer"),
    "trainer.precision": _choice(PRECISIONS),
    "trainer.jit_compile": _rule(lambda v: isinstance(v, bool), "true or false"),
    "trainer.deterministic": _rule(lambda v: isinstance(v, bool), "true or false"),
    "trainer.resume": _rule(lambda v: isinstance(v, bool), "true or false"),
    "trainer.strategy": _choice(STRATEGIES),
    "trainer.lr_scaling": _choice(LR_SCALING),
    "trainer.memory_growth": _rule(lambda v: isinstance(v, bool), "true or false"),
    "trainer.monitor": _rule(lambda v: v is None or isinstance(v, str), "null or a metric name such as val_loss"),
    "trainer.verbose": _choice(("auto", 0, 1, 2)),
    "optimizer.name": _choice(tuple(OPTIMIZERS)),
    "optimizer.lr": _rule(positive_number, "a number > 0"),
    "optimizer.schedule": _choice(("constant", "cosine")),
    "optimizer.warmup_epochs": _rule(lambda v: _number(v) and v >= 0, "a number >= 0"),
    "loss.ce": _rule(lambda v: _number(v) and v >= 0, "a number >= 0"),
    "loss.dice": _rule(lambda v: _number(v) and v >= 0, "a number >= 0"),
    "loss.focal": _rule(lambda v: _number(v) and v >= 0, "a number >= 0"),
    "loss.gamma": _rule(lambda v: _number(v) and v >= 0, "a number >= 0"),
    "tracking.experiment": _rule(lambda v: isinstance(v, str) and v != "", "a non-empty string"),
    "tracking.num_examples": _rule(lambda v: _integer(v) and v >= 0, "an integer >= 0"),
    "tracking.log_model": _rule(lambda v: isinstance(v, bool), "true or false"),
}


def check_schema(cfg: DictConfig) -> None:
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


def check_task(model_name: str, data_name: str, task: str) -> None:
    """The model's kind (segmentation, localization, classification) must be the data's task."""
    kind = TASK_OF_MODEL.get(model_name, "classification")
    if kind != task:
        valid = [m for m in MODELS if TASK_OF_MODEL.get(m, "classification") == task]
        raise ConfigError(
            f"model.name={model_name} is a {kind} model but data={data_name} is a {task} set; "
            f"valid for {task}: {', '.join(valid)}"
        )


def _failing_layer(err: BaseException) -> keras.layers.Layer | None:
    """The innermost Keras layer being called when err was raised (its name goes into the message)."""
    layer = None
    for frame, _ in traceback.walk_tb(err.__traceback__):
        candidate = frame.f_locals.get("self")
        if isinstance(candidate, keras.layers.Layer) and not isinstance(candidate, keras.Model):
            layer = candidate
    return layer


def build_checked(name: str, input_shape: tuple[int, int, int], num_classes: int, options: dict) -> keras.Model:
    """build_model, with Keras' own shape errors (an output size < 1 at some layer) as a ConfigError."""
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
    shape = (cfg.data.image_size, cfg.data.image_size, cfg.data.get("channels", 3))
    build_checked(cfg.model.name, shape, len(classes) if classes else 2, options)
    keras.backend.clear_session()  # the real build then names and initialises its layers as without this check


def validate_config(cfg: DictConfig) -> None:
    """Every check that needs no data: schema, model against task, and a dry build of the model."""
    check_schema(cfg)
    check_task(cfg.model.name, cfg.data.name, cfg.data.get("task", "segmentation"))
    dry_build(cfg)


def check_targets(targets, classes: list[str], task: str, split: str, data_name: str) -> None:
    """Class labels must index data.classes (segmentation masks are checked file by file when read)."""
    if task != "classification" or len(targets) == 0:
        return
    low, high = int(targets.min()), int(targets.max())
    if low < 0 or high >= len(classes):
        raise ConfigError(
            f"data.classes has {len(classes)} names but the {split} split of data={data_name} has labels "
            f"{low}..{high}; valid: a list of {high + 1} class names (one per label)"
        )
