"""A resolved config as plain Python: what a command hands the library below it.

A command composes its Hydra config, checks it (pipeline.config.schema), and passes `spec(cfg)` (or a
section of it) down: a read-only mapping with attribute access whose sections are Specs and whose values
are plain lists, numbers and strings, every interpolation resolved. The library never sees Hydra's or
OmegaConf's types (tests/test_layers.py), so a notebook can call it with a dict as well.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


def plain(value):
    """A config node, or any mapping or sequence, as dicts, lists and scalars (interpolations resolved)."""
    if isinstance(value, Mapping):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return [plain(item) for item in value]
    return value


class Spec(Mapping):
    """A read-only config section: `spec.trainer.epochs`, `spec["trainer"]["epochs"]`, `spec.get("cache", "auto")`."""

    __slots__ = ("_values",)

    def __init__(self, values: Mapping = ()):
        values = {key: Spec(item) if isinstance(item, Mapping) else item for key, item in plain(values).items()}
        object.__setattr__(self, "_values", values)

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(f"no key {name!r} in this config section; keys: {', '.join(self._values)}") from None

    def __setattr__(self, name, value):
        raise TypeError(f"a config Spec is read-only (setting {name!r}): change the config, then make a new Spec")

    def __getitem__(self, key: str):
        return self._values[key]

    def __iter__(self):
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __reduce__(self):
        return Spec, (plain(self),)

    def __repr__(self) -> str:
        return f"Spec({plain(self)!r})"


def spec(config: Mapping) -> Spec:
    """The config (a DictConfig from Hydra, or any mapping) as a Spec."""
    return Spec(config)


@dataclass(frozen=True)
class JobPlace:
    """Where a job sits among its siblings, as plain values: the sweep folder of a multirun (None for a single
    run), the job's number in it (an Optuna sweep's trial number) and its command-line overrides. A command
    reads it from Hydra once (`pipeline.config.job_place`); a notebook calling the library leaves the default."""

    sweep_dir: Path | None = None
    number: int | None = None
    overrides: tuple[str, ...] = ()
