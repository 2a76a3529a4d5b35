"""A model's contract: what it takes and what it gives, carried by every logged model and every export.

A client that has only the artefact reads it and feeds the model correctly: the input's name, size,
channels, layout and value range, the mapping from the files' own values (16-bit, float) to that range,
the output's name and meaning, the class names, and where the model came from (the run, the data's digest,
its held-out test score). It is plain JSON (`contract.json`), kept in each format's own place: the MLflow
model's metadata, ONNX `metadata_props`, a SavedModel's assets, beside a LiteRT flatbuffer.

Preprocessing, in order, as `cnn predict` and the served model do it:
1. read the file's values at its own depth (8-bit, 16-bit or float), channels last;
2. `intensity` (when not null): map [low, high] linearly to 0..255, clip to 0..255, round to integers
   (`low`/`high` fixed by `range`, or the image's own percentiles for mode `percentile`);
3. resize to the input's height x width (bilinear) where the image is another size;
4. float32, NHWC (batch, height, width, channels), values 0..255; the model normalises inside itself.
"""

from __future__ import annotations

import json
from pathlib import Path

CONTRACT_FILE = "contract.json"
INPUT_NAME = "images"  # one name in every format: the MLflow signature, ONNX, SavedModel, LiteRT
VERSION = 1


def describe(
    input_shape: tuple[int, int, int],
    class_names: list[str],
    task: str,
    output: str,
    meaning: str,
    intensity: dict | None = None,
    source_run: str | None = None,
    data: dict | None = None,
    test_metric: dict | None = None,
) -> dict:
    """The contract of a model taking (height, width, channels) images; `intensity` the mapping of the
    files' values (pipeline.data.pixels.Intensity.as_dict(), None for 8-bit files), `data` {name, digest},
    `test_metric` {name, value}."""
    height, width, channels = (int(v) for v in input_shape)
    mapping = None
    if intensity:
        mapping = {"mode": intensity["mode"], "percentiles": intensity.get("percentiles")}
        if intensity["mode"] == "range":
            mapping["range"] = list(intensity["range"])
    return {
        "contract_version": VERSION,
        "task": task,
        "class_names": [str(name) for name in class_names],
        "input": {
            "name": INPUT_NAME,
            "shape": [None, height, width, channels],
            "dtype": "float32",
            "layout": "NHWC",
            "channels": channels,
            "color": {1: "grey", 3: "RGB"}.get(channels, f"{channels} channels"),
            "value_range": [0, 255],
            "intensity": mapping,
            "resize": f"bilinear to {height}x{width}",
        },
        "output": {"name": output, "meaning": meaning},
        "source_run": source_run,
        "data": data or {},
        "test_metric": test_metric or {},
    }


def write(contract: dict, folder: str | Path) -> Path:
    """contract.json in `folder`."""
    path = Path(folder) / CONTRACT_FILE
    path.write_text(json.dumps(contract, indent=1) + "\n")
    return path


def read(folder: str | Path) -> dict | None:
    """contract.json in `folder` (or the two folders above it: an MLflow model's data folder), or None."""
    folder = Path(folder)
    for place in (folder, *folder.parents[:2]):
        if (place / CONTRACT_FILE).is_file():
            return json.loads((place / CONTRACT_FILE).read_text())
    return None


def metadata_props(contract: dict) -> dict[str, str]:
    """The contract as ONNX metadata_props (string to string): the whole JSON under `contract`, and its most
    used fields flat, so a generic tool (Netron, onnxruntime's modelmeta) shows them."""
    shape = contract["input"]["shape"]
    flat = {
        "contract": json.dumps(contract),
        "class_names": json.dumps(contract["class_names"]),
        "input_name": contract["input"]["name"],
        "input_size": f"{shape[1]}x{shape[2]}",
        "input_channels": str(contract["input"]["channels"]),
        "input_layout": contract["input"]["layout"],
        "value_range": "0..255",
        "intensity": json.dumps(contract["input"]["intensity"]),
        "output_name": contract["output"]["name"],
        "output_meaning": contract["output"]["meaning"],
        "task": contract["task"],
    }
    if contract.get("source_run"):
        flat["source_run"] = contract["source_run"]
    return flat
