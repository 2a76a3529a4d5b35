"""The logged model as an MLflow python_function that loads in any process: `mlflow.pyfunc.load_model`,
`mlflow models serve`, a batch job, with or without this package installed.

Keras rebuilds a saved model's classes only from Keras' own packages (or from classes registered in the
process), so a model holding this package's layers (SegNet's MaxUnpooling2D, the paper U-Net's
MirrorPadding2D, AlexNet's LRN, a fixed-kernel stem) cannot be loaded where `pipeline` was never imported.
So each logged model carries the package's code in its `code/` folder (MLflow puts it on sys.path) and names
this module as its python_function loader: `_load_pyfunc` registers the layers, then loads the model.

What it takes: a column `images`, one image per row (or a list of them in one row), each as a client has it:
the bytes of an image file (PNG, JPEG, TIFF, ...; base64 text in JSON), read exactly as `cnn predict` reads a
file (its own bit depth mapped by the model's contract, grey or RGB as the model takes); or an array (H, W)
or (H, W, C) of the file's values at any size. The model's own transform applies: the training run's
intensity mapping (contract.json) for 16-bit or float values, resized (bilinear) to the model's input and,
for a segmentation model, its probabilities resized back, so each answer is at the image's own size.

What it gives, per image: `mask` (H, W class indices at the image's size) for a segmentation model, `label`
and `index` for a classifier, `box` (pixels of the image) and `box_fraction` for a localizer, `values` by
name for a regressor; with params {"probabilities": true} also the probabilities. JSON over HTTP:

    curl -s localhost:5001/invocations -H 'Content-Type: application/json' \
         -d "{\"dataframe_records\": [{\"images\": \"$(base64 -w0 a.png)\"}]}"

`Predictor.predict` on a plain float32 array (N, H, W, C) at the model's input size gives the model's raw
outputs (probabilities or boxes): what the exports are checked against.
"""

import base64
import io
import json
import tempfile
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
    """The python_function model (see the module docstring); `intensity` (a pipeline.data.pixels.Intensity,
    None for 8-bit values) maps raw values; `contract` (pipeline.deploy.contract) names the task and classes."""

    def __init__(self, model, batch_size: int = 32, intensity=None, contract: dict | None = None):
        self.model, self.batch_size, self.intensity = model, batch_size, intensity
        self.contract = contract or {}

    def predict(self, data, params: dict | None = None):
        if isinstance(data, dict) and not isinstance(data.get("images"), np.ndarray):
            data = {"images": data.get("images", next(iter(data.values())))}
        if isinstance(data, np.ndarray) and data.dtype != object:  # the model's own tensors, as exports are checked
            return self.outputs(data, mapped=False)
        images = [self.decode(item, k) for k, item in enumerate(_items(data))]
        probabilities = bool((params or {}).get("probabilities", False))
        return [self.answer(image, probabilities) for image in images]

    def outputs(self, data, mapped: bool = True) -> np.ndarray:
        """The model's main output for images at its input size, in batches; `mapped`: values already 0..255."""
        import keras

        images = np.asarray(data, dtype=np.float32)
        if images.ndim == 3:  # one image
            images = images[None]
        if self.intensity is not None and not mapped:  # the training run's mapping of the files' values
            images = np.stack([self.intensity.to_uint8(image) for image in images]).astype(np.float32)
        batches = range(0, len(images), self.batch_size)
        with warnings.catch_warnings():  # a named Input called with a plain array: Keras warns, then uses it
            warnings.filterwarnings("ignore", message="The structure of `inputs` doesn't match")
            outputs = [self.model(images[i : i + self.batch_size], training=False) for i in batches]
        return np.concatenate([keras.ops.convert_to_numpy(out).astype(np.float32) for out in outputs])

    def decode(self, item, k: int) -> np.ndarray:
        """One image as the model's 0..255 values (H, W, C) at its own size: a file's bytes read as `cnn predict`
        reads the file, or an array's values mapped by the contract's intensity."""
        from pipeline.data.folders import read_images
        from pipeline.data.pixels import AUTO
        from pipeline.errors import DataError

        channels = int(self.model.inputs[0].shape[-1])
        if isinstance(item, str):
            try:
                item = base64.b64decode(item, validate=True)
            except ValueError:
                raise DataError(f"images[{k}]: text that is not base64; valid: an image file's bytes as base64, or "
                                "an array of its values") from None  # fmt: skip
        if isinstance(item, bytes):
            with tempfile.TemporaryDirectory() as scratch:
                path = Path(scratch) / f"image{k}{_suffix(item, k)}"
                path.write_bytes(item)
                [image] = read_images([path], channels, self.intensity or AUTO)
            return image
        image = np.asarray(item)
        if image.ndim == 2:
            image = image[..., None]
        if image.ndim != 3 or image.shape[-1] != channels or image.dtype.kind not in "uif":
            raise DataError(f"images[{k}]: an array of shape {image.shape} ({image.dtype}); valid: (H, W) or "
                            f"(H, W, {channels}) numbers, or an image file's bytes")  # fmt: skip
        if self.intensity is not None:
            return self.intensity.to_uint8(image, f"images[{k}]")
        low, high = float(image.min()), float(image.max())
        if low < 0 or high > 255:
            raise DataError(f"images[{k}]: values {low:g}..{high:g} outside 0..255 and the model maps none (its "
                            "contract's intensity is null: it was trained on 8-bit files); valid: 0..255 values, or "
                            "the file's bytes")  # fmt: skip
        return image.astype(np.uint8) if np.array_equal(image, np.round(image)) else image.astype(np.float32)

    def answer(self, image: np.ndarray, probabilities: bool) -> dict:
        """What the model says about one image, at the image's own size."""
        from pipeline.data.folders import outputs_at_size, resize_image

        shape = tuple(int(v) for v in self.model.inputs[0].shape[1:3])
        task, names = self.contract.get("task"), self.contract.get("class_names") or []
        if len(self.model.outputs[0].shape) == 4:  # per pixel
            out = outputs_at_size(self.outputs, image, shape)
            found = {"mask": out.argmax(-1).astype(int).tolist()}
        else:
            out = self.outputs(resize_image(image, shape))[0]
            height, width = image.shape[:2]
            if task == "localization":
                found = {"box": (out * np.array([width, height, width, height])).tolist(), "box_fraction": out.tolist()}
            elif task == "regression":
                found = {"values": dict(zip(names or map(str, range(len(out))), out.tolist()))}
            else:
                index = int(out.argmax())
                found = {"label": names[index] if index < len(names) else str(index), "index": index}
        if probabilities and task not in ("localization", "regression"):
            found["probabilities"] = out.tolist()
        return found


def _items(data):
    """Each image a request holds: the `images` column's rows, a row holding a list of images expanded."""
    column = data["images"] if isinstance(data, dict) or hasattr(data, "columns") else data
    for cell in list(column):
        yield from _expand(cell)


def _expand(cell):
    if isinstance(cell, (str, bytes)):
        yield cell
        return
    array = (
        np.asarray(cell)
        if not isinstance(cell, (list, tuple)) or not cell or not isinstance(cell[0], (str, bytes))
        else None
    )
    if array is None or array.dtype == object:
        for item in cell:
            yield from _expand(item)
    elif array.ndim == 4:
        yield from array
    else:
        yield array


def _suffix(data: bytes, k: int) -> str:
    """The file suffix of encoded image bytes, from their own header (Pillow's format)."""
    from PIL import Image, UnidentifiedImageError

    from pipeline.errors import DataError

    try:
        with Image.open(io.BytesIO(data)) as img:
            kind = img.format
    except (UnidentifiedImageError, OSError):
        raise DataError(f"images[{k}]: {len(data)} bytes that are no image file Pillow reads (starting "
                        f"{data[:8]!r}); valid: PNG, JPEG, TIFF, BMP bytes") from None  # fmt: skip
    return {"JPEG": ".jpg", "TIFF": ".tif", "PNG": ".png", "BMP": ".bmp"}.get(kind, f".{kind.lower()}")


def _load_pyfunc(path: str) -> Predictor:
    """MLflow's python_function entry point: `path` is the model's data folder."""
    import keras

    register_layers()
    folder = Path(path)
    model_file = folder / MODEL_FILE if (folder / MODEL_FILE).is_file() else next(folder.rglob("*.keras"))
    from pipeline.deploy import contract

    model = keras.saving.load_model(model_file, compile=False, safe_mode=True)
    return Predictor(model, intensity=_intensity(folder), contract=contract.read(folder))


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
