"""What a training job trains and how: a model factory's result (`Built`) and its phases.

A `Job` (pipeline.training.job) is the one training path: it reads and streams the data, then asks a factory
for the model. `scratch` is the train stage's (a registered architecture, every weight trained, one phase,
the best validation epoch kept); pipeline.training.transfer.factory is the transfer stage's (a reused
backbone under a new head, frozen then fine-tuned phase by phase, the last epoch kept). Each phase recompiles
with its own learning rate after changing what is trainable; resume, pruning, distribution and logging
are the Job's, whatever the factory.
"""

from collections.abc import Callable
from dataclasses import dataclass, field

import keras
import numpy as np

from pipeline.config.spec import Spec, plain
from pipeline.models import build_model
from pipeline.models.backbones import set_trainable
from pipeline.training.fit import model_options


@dataclass(frozen=True)
class Phase:
    """Epochs at one learning rate with one set of trainable weights: `top_blocks` of the backbone trainable
    (0: only the head; None: everything)."""

    epochs: int
    lr: float
    top_blocks: int | None = None


@dataclass
class Built:
    """A factory's model and how to train it. `keep`: "best" (the best validation epoch, by the monitored
    metric) or "last" (the last epoch: a stage whose validation set may outnumber its training set).
    `tags` describe where the model came from (a transfer's source run)."""

    model: keras.Model
    phases: list[Phase]
    backbone: keras.Model | None = None
    keep: str = "best"
    tags: dict[str, str] = field(default_factory=dict)


Factory = Callable[[Spec, tuple, int], Built]  # (config, input shape, number of classes) -> Built


def scratch(cfg: Spec, input_shape: tuple, num_classes: int) -> Built:
    """The train stage's model: cfg.model's architecture, newly initialised, trained whole for trainer.epochs."""
    model = build_model(cfg.model.name, input_shape, num_classes, **model_options(plain(cfg.model)))
    return Built(model, [Phase(int(cfg.trainer.epochs), float(cfg.optimizer.lr))])


def enter_phase(built: Built, phase: Phase) -> tuple[int, list[str]]:
    """Make the phase's weights trainable (the backbone's top blocks); returns the number of trainable weights
    and the backbone blocks unfrozen. Recompile after (Keras fixes what trains at compile time)."""
    unfrozen = set_trainable(built.backbone, phase.top_blocks) if built.backbone is not None else []
    trainable = sum(int(np.prod(w.shape)) for w in built.model.trainable_weights)
    return trainable, unfrozen
