"""cnn-pipeline: the CNN lecture as a reproducible Keras + Hydra + MLflow experiment pipeline.

TensorFlow is optional (the `tensorflow` extra): on a host with JAX and no TensorFlow (a GPU cluster's
image, an install from `make wheelhouse`), Keras is pointed at JAX unless KERAS_BACKEND or
~/.keras/keras.json says otherwise, before anything imports Keras.

TensorFlow's start-up lines and its later C++ info lines are off unless TF_CPP_MIN_LOG_LEVEL=0
(pipeline.console): they repeat in every process and say nothing a user acts on.

The package by concern (each folder's docstring says what it may import; tests/test_layers.py checks it):
  commands/    the stages behind `cnn <command>`: Hydra config in, plain arguments to the library below
  config/      the Hydra glue (stage wrapper, resolvers), the schema and the vocabularies (no Keras)
  data/        sources, readers, the input pipeline, augmentation, generated sets, the data profile
  models/      builders of plain arguments, looked up by name; custom layers
  tasks/       what differs between segmentation, classification, localization: targets, scores, outputs
  training/    the training job, runtime, resume, callbacks, losses
  evaluation/  metrics from one confusion matrix, leaderboards ranked by validation
  interpret/   what a network learned: probes (saliency, Grad-CAM, occlusion, ...), their pictures
  deploy/      export formats checked against Keras, the served pyfunc
  tracking/    the one package that talks to MLflow
  sweeps/      Hydra multiruns as MLflow parent runs, Optuna studies
  plots/       figures: curves, predictions, confusion matrices
  lecture/     the lecture's algorithms from scratch: kernels, conv arithmetic, biology
and errors.py, safety.py, console.py, notebook.py, shared by all.
"""

import importlib.util
import json
import os
from pathlib import Path

from pipeline.console import quiet_tensorflow

__version__ = "0.1.0"


def _default_backend() -> None:
    """KERAS_BACKEND=jax when Keras would otherwise pick TensorFlow (its default, or a keras.json written by
    an earlier import) and TensorFlow is not installed but JAX is."""
    if "KERAS_BACKEND" in os.environ or importlib.util.find_spec("tensorflow") is not None:
        return
    settings = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "keras.json"
    try:
        chosen = json.loads(settings.read_text()).get("backend", "tensorflow")
    except (OSError, ValueError, AttributeError):
        chosen = "tensorflow"
    if chosen == "tensorflow" and importlib.util.find_spec("jax") is not None:
        os.environ["KERAS_BACKEND"] = "jax"


_default_backend()
quiet_tensorflow()
