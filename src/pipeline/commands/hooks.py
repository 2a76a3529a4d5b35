"""Hydra's hooks into a multirun: the callback conf/config.yaml registers under hydra.callbacks.

`MlflowSweep` reads the launching process's Hydra config once and hands plain values to
pipeline.sweeps.sweep.SweepParent (the parent MLflow run, its resume, its summary). Before anything is
created it checks that every key the multirun varies exists in the config the jobs compose.
"""

import json
import logging
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from pipeline.config import one_line_errors

log = logging.getLogger(__name__)


def swept(config: DictConfig) -> list[tuple[str, str]]:
    """(key as written, where) of everything a multirun varies: its sweeper's search space and the
    command-line overrides with several values (a,b), a range or a distribution."""
    params = OmegaConf.select(config, "hydra.sweeper.params")
    found = [(str(k), "hydra.sweeper.params") for k in (OmegaConf.to_container(params) if params else {})]
    for override in config.hydra.overrides.task:
        key, _, value = override.partition("=")
        if any(mark in value for mark in (",", "range(", "choice(", "interval(", "glob(")) and "[" not in value:
            found.append((key, "the command line"))
    return found


def swept_keys(config: DictConfig) -> list[str]:
    """The keys a multirun varies (see `swept`), without +/~."""
    return list(dict.fromkeys(key.lstrip("+~") for key, _ in swept(config)))


def check_swept_keys(config: DictConfig) -> None:
    """Every key a multirun varies (the sweeper's search space, the command line's a,b / choice / interval)
    must be a key of the config the jobs compose, else one ConfigError now, naming the option chosen and its
    keys, instead of Hydra's `Could not override` in every job after the parent run and study exist."""
    from pipeline.config.schema import ABSENT
    from pipeline.errors import ConfigError

    choices = config.hydra.runtime.choices
    for key, where in swept(config):
        if key.startswith(("+", "~")) or key.startswith("hydra.") or key in choices:
            continue  # an addition, a deletion, Hydra's own, or a config group (model=unet,segnet)
        if OmegaConf.select(config, key, default=ABSENT) is not ABSENT:
            continue
        group, _, rest = key.partition(".")
        node = OmegaConf.select(config, group, default=None)
        chosen = f"{group}={choices[group]}" if group in choices else group
        keys = ", ".join(map(str, node.keys())) if OmegaConf.is_dict(node) else "none"
        raise ConfigError(
            f"{where} sweeps {key}, which {chosen} does not have (its keys: {keys}); valid: sweep a key it has, "
            f"or add one with +{key}=..."
        )


class MlflowSweep(Callback):
    """Parent MLflow run of a Hydra multirun (pipeline.sweeps.sweep.SweepParent)."""

    def __init__(self) -> None:
        self.parent = None

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        with one_line_errors("the sweep could not record itself (its MLflow parent run), so it"):
            check_swept_keys(config)  # before any parent run, study or data exists
            from pipeline.config.spec import Spec, spec
            from pipeline.sweeps.sweep import SweepParent

            hydra = config.hydra
            tags = {
                "sweeper": hydra.sweeper._target_.rsplit(".", 1)[-1],
                "launcher": hydra.launcher._target_.rsplit(".", 1)[-1],
            }
            if params := OmegaConf.select(config, "hydra.sweeper.params"):
                tags["search_space"] = json.dumps(OmegaConf.to_container(params))
            # only the store's keys: others may name a job's Hydra values (run_name: ${hydra:runtime.choices.model}),
            # which do not exist in the launching process
            store = Spec({key: config.tracking[key] for key in ("uri", "experiment", "artifact_root")})
            self.parent = SweepParent()
            self.parent.start(Path(hydra.sweep.dir), store, spec(config.data), tags,
                              swept_keys(config), [str(o) for o in hydra.overrides.task],
                              OmegaConf.select(config, "sweep.register"))  # fmt: skip

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        with one_line_errors("the sweep's summary"):
            if self.parent is not None:
                self.parent.finish("FINISHED")
