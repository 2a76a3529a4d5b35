"""cnn-pipeline: the CNN lecture as a reproducible Keras + Hydra + MLflow experiment pipeline.

TensorFlow is optional (the `tensorflow` extra): on a host with JAX and no TensorFlow (a GPU cluster's
image, an install from `make wheelhouse`), Keras is pointed at JAX unless KERAS_BACKEND or
~/.keras/keras.json says otherwise, before anything imports Keras.

TensorFlow's C++ info and warning log is off unless TF_CPP_MIN_LOG_LEVEL is set (0 shows it): it repeats
its CPU-feature banner in every process, and it would print, as a warning with a Python traceback, a data
error that the train stage reports in one line (a file found unreadable when its batch is decoded).
"""

import importlib.util
import json
import os
from pathlib import Path

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
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
