"""The registry of tasks: each data set says its task (`data.task`), each model which task it serves
(`pipeline.models.MODELS`), and every stage asks the task object for what differs between them.

TASKS maps a task's name to where its class lives; `get_task` imports it, so reading the names (the config
schema does) imports no Keras. A new task is one module and one entry here. May import config, data,
evaluation, interpret (the targets a picture explains), models, plots, training (losses).
"""

import functools
import importlib

from pipeline.errors import ConfigError
from pipeline.tasks.base import Report, Task, Written, direction, unique_names

TASKS: dict[str, str] = {
    "segmentation": "pipeline.tasks.segmentation:Segmentation",
    "classification": "pipeline.tasks.classification:Classification",
    "localization": "pipeline.tasks.localization:Localization",
    "regression": "pipeline.tasks.regression:Regression",
}


@functools.cache
def get_task(name: str) -> Task:
    """The task object of `name` (one per process)."""
    if name not in TASKS:
        raise ConfigError(f"data.task={name!r} is unknown; valid: {', '.join(TASKS)}")
    module, cls = TASKS[name].split(":")
    return getattr(importlib.import_module(module), cls)()


def infer_task(model) -> Task:
    """For a model file without its run's config: per-pixel output -> segmentation, 4 sigmoid outputs named
    box -> localization, a head named values -> regression, else classification."""
    if len(model.outputs[0].shape) == 4:
        return get_task("segmentation")
    if model.layers[-1].name == "box":
        return get_task("localization")
    if model.layers[-1].name == "values":
        return get_task("regression")
    return get_task("classification")


__all__ = ["TASKS", "Report", "Task", "Written", "direction", "get_task", "infer_task", "unique_names"]
