"""A client that has only the ONNX file: everything it needs to feed the model comes from the file's own
metadata (the contract), nothing from this project. Run as a plain script, in isolated mode:

    python -I tests/onnx_client.py model.onnx out.npz image.png [image.png ...]
writes out.npz with the model's output and each image's argmax over its last axis (per-pixel classes or the
image's class).
Reads 8-bit and 16-bit PNG/TIFF files with Pillow at their own depth.
"""

import json
import sys

import numpy as np
import onnxruntime
from PIL import Image


def read_values(path: str, channels: int) -> np.ndarray:
    with Image.open(path) as image:
        if image.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit grey: its own values, not clipped to 8 bits
            values = np.asarray(image, dtype=np.uint16 if image.mode.startswith("I;16") else np.int32)
        else:
            values = np.asarray(image.convert("RGB" if channels == 3 else "L"))
    values = values[..., None] if values.ndim == 2 else values
    return values.astype(np.float64)


def preprocess(values: np.ndarray, contract: dict) -> np.ndarray:
    spec = contract["input"]
    mapping = spec["intensity"]
    if mapping:  # the files' own values -> the model's 0..255, as the contract says
        if mapping["mode"] == "range":
            low, high = mapping["range"]
        else:  # percentile: the image's own
            low, high = np.percentile(values, mapping["percentiles"])
        values = np.rint(np.clip((values - low) * (255.0 / (high - low)), 0, 255))
    _, height, width, channels = spec["shape"]
    if values.shape[:2] != (height, width):
        values = np.asarray(Image.fromarray(values[..., 0] if channels == 1 else values.astype(np.uint8)).resize(
            (width, height), Image.BILINEAR), dtype=np.float64)  # fmt: skip
        values = values[..., None] if values.ndim == 2 else values
    assert values.shape[-1] == channels and spec["layout"] == "NHWC"
    return values.astype(np.float32)


def main(model: str, out: str, *images: str) -> None:
    session = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
    contract = json.loads(session.get_modelmeta().custom_metadata_map["contract"])
    batch = np.stack([preprocess(read_values(path, contract["input"]["channels"]), contract) for path in images])
    [output] = session.run([contract["output"]["name"]], {contract["input"]["name"]: batch})
    assert "pipeline" not in sys.modules  # nothing of the project was needed
    np.savez(out, output=output, classes=output.argmax(-1), names=np.array(contract["class_names"]))


if __name__ == "__main__":
    main(*sys.argv[1:])
