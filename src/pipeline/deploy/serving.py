"""The logged model as an MLflow python_function that loads in any process: `mlflow.pyfunc.load_model`,
`mlflow models serve`, a batch job, with or without this package installed.

Keras rebuilds a saved model's classes only from Keras' own packages (or from classes registered in the
process), so a model holding this package's layers (SegNet's MaxUnpooling2D, the paper U-Net's
MirrorPadding2D, AlexNet's LRN, a fixed-kernel stem) cannot be loaded where `pipeline` was never imported.
So each logged model carries the package's code in its `code/` folder (MLflow puts it on sys.path) and names
this module as its python_function loader: `_load_pyfunc` registers the layers, then loads the model.

What it predicts: class probabilities per pixel, (batch, height, width, classes) for a segmentation
model; per image, (batch, classes), for a classifier; boxes (x_min, y_min, x_max, y_max as fractions of
the image) for a localizer. Input: images (batch, height, width, channels) float32 holding the values of
the image files, resized to the model's input size: 0..255 for 8-bit files; for 16-bit or float files
their own values, which the training run's intensity mapping (data.intensity, kept in the model folder's
contract.json: pipeline.deploy.contract) turns into the model's 0..255 exactly as training did. The logged
signature names both.
"""

import json
import warnings
from pathlib import Path

import numpy as np

MODEL_FILE = "model.keras"
PREPROCESSING_FILE = "preprocessing.json"


def register_layers() -> None:
    """Import the modules that register this package's Keras classes (nothing else: no Hydra, no MLflow)."""
    import pipeline.models.classic  # noqa: F401  LocalResponseNormalization
    import pipeline.models.layers  # noqa: F401  unpooling, mirror padding, fixed kernels, ImageNet preprocessing
    import pipeline.models.localization  # noqa: F401  BoxIoU


class Predictor:
    """The python_function model: predict(images) -> probabilities (or boxes), as NumPy float32; `intensity`
    (a pipeline.data.pixels.Intensity, or None for 8-bit values) maps raw file values first."""

    def __init__(self, model, batch_size: int = 32, intensity=None):
        self.model, self.batch_size, self.intensity = model, batch_size, intensity

    def predict(self, data, params: dict | None = None) -> np.ndarray:
        import keras

        if isinstance(data, dict):  # a named tensor signature hands {"images": array}
            data = data["images"] if "images" in data else next(iter(data.values()))
        images = np.asarray(data, dtype=np.float32)
        if images.ndim == 3:  # one image
            images = images[None]
        if self.intensity is not None:  # the training run's mapping of the files' values, image by image
            images = np.stack([self.intensity.to_uint8(image) for image in images]).astype(np.float32)
        batches = range(0, len(images), self.batch_size)
        with warnings.catch_warnings():  # a named Input called with a plain array: Keras warns, then uses it
            warnings.filterwarnings("ignore", message="The structure of `inputs` doesn't match")
            outputs = [self.model(images[i : i + self.batch_size], training=False) for i in batches]
        return np.concatenate([keras.ops.convert_to_numpy(out).astype(np.float32) for out in outputs])


def _load_pyfunc(path: str) -> Predictor:
    """MLflow's python_function entry point: `path` is the model's data folder."""
    import keras

    register_layers()
    folder = Path(path)
    model_file = folder / MODEL_FILE if (folder / MODEL_FILE).is_file() else next(folder.rglob("*.keras"))
    return Predictor(keras.saving.load_model(model_file, compile=False, safe_mode=True), intensity=_intensity(folder))


def _intensity(folder: Path):
    """The intensity mapping the model's contract records (contract.json, searched up from the data folder; a
    model logged with preprocessing.json instead is read too), or None for 8-bit inputs."""
    from pipeline.data.pixels import Intensity
    from pipeline.deploy import contract

    found = contract.read(folder)
    recorded = (found or {}).get("input", {}).get("intensity")
    for place in (folder, *folder.parents[:2]):
        if found is None and (place / PREPROCESSING_FILE).is_file():
            recorded = json.loads((place / PREPROCESSING_FILE).read_text()).get("intensity")
    return Intensity.from_config(recorded) if recorded else None
