"""The registry of tasks: each data set says its task (`data.task`), each model which task it serves
(`pipeline.models.MODELS`), and every stage asks the task object for what differs between them."""

from pipeline.errors import ConfigError
from pipeline.tasks.base import TARGETS, Report, Task, Written, direction, unique_names
from pipeline.tasks.classification import Classification
from pipeline.tasks.localization import Localization
from pipeline.tasks.segmentation import Segmentation

TASKS: dict[str, Task] = {task.name: task for task in (Segmentation(), Classification(), Localization())}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ConfigError(f"data.task={name!r} is unknown; valid: {', '.join(TASKS)}")
    return TASKS[name]


def infer_task(model) -> Task:
    """For a model file without its run's config: per-pixel output -> segmentation, 4 sigmoid outputs named
    box -> localization, else classification."""
    if len(model.outputs[0].shape) == 4:
        return TASKS["segmentation"]
    if model.layers[-1].name == "box":
        return TASKS["localization"]
    return TASKS["classification"]


__all__ = ["TARGETS", "TASKS", "Report", "Task", "Written", "direction", "get_task", "infer_task", "unique_names"]
