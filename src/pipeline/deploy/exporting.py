"""A trained model in the formats deployment tools take, each run by its own runtime and checked against Keras.

    from pipeline.deploy import exporting
    path = exporting.export(model, "onnx", folder, terms)        # the inference model (main output, no loss)
    gap = exporting.parity(model, "onnx", path, images)           # max |probability difference| vs Keras
The stage over these is `cnn export` (it logs the artefact and the figure to MLflow).

Each format goes through Keras 3's `Model.export` on the TensorFlow backend: `saved_model` (TF Serving,
`tf.saved_model.load`), `onnx` (tf2onnx, run here with ONNX Runtime) and `litert` (the TFLite converter,
run with TensorFlow's LiteRT interpreter, for phones and microcontrollers). Each carries the model's contract
(pipeline.deploy.contract) in the format's own place: ONNX metadata_props (its input named `images`, its
output after the contract's output), the SavedModel's assets/contract.json, contract.json beside the LiteRT
flatbuffer (LiteRT's metadata writer, tflite_support, is unmaintained). ONNX from the JAX backend
(jax2onnx 0.17) was tried and left: its MaxPool node has a pooling size ONNX Runtime rejects. A layer a
format cannot take is found by exporting each kind of layer alone (`unsupported_layer`), so the refusal
names it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import re
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from pipeline.console import native_stderr_captured
from pipeline.deploy import contract as contracts
from pipeline.errors import ConfigError
from pipeline.models.precision import float32_model, is_float32


def _load_saved_model(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    import tensorflow as tf

    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    [name] = serve.structured_input_signature[1]
    return lambda images: next(iter(serve(**{name: tf.constant(images)}).values())).numpy()


def _load_onnx(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda images: session.run(None, {name: images})[0]


def _load_litert(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    from ai_edge_litert.interpreter import Interpreter  # the runtime a device runs (tf.lite's is deprecated)

    runners = {}  # one interpreter per batch shape: a flatbuffer's tensors are allocated for one shape

    def run(images: np.ndarray) -> np.ndarray:
        if images.shape not in runners:
            interpreter = Interpreter(model_path=str(path))
            [name] = interpreter.get_signature_list()["serving_default"]["inputs"]
            runners[images.shape] = (interpreter.get_signature_runner(), name)
        runner, name = runners[images.shape]
        return next(iter(runner(**{name: images}).values()))

    return run


@dataclass(frozen=True)
class Format:
    """One deployment format: what Keras' export calls it, the artefact's name, what it needs installed,
    and the runtime that executes it."""

    keras_format: str
    artefact: str
    needs: tuple[str, ...]
    runtime: str
    load: Callable[[Path], Callable[[np.ndarray], np.ndarray]]  # the artefact in its runtime, once

    def run(self, path: Path, images: np.ndarray) -> np.ndarray:
        return self.load(path)(images)


FORMATS: dict[str, Format] = {
    "saved_model": Format("tf_saved_model", "saved_model", ("tensorflow",), "tf.saved_model", _load_saved_model),
    "onnx": Format("onnx", "model.onnx", ("tensorflow", "tf2onnx", "onnxruntime"), "onnxruntime", _load_onnx),
    "litert": Format("litert", "model.tflite", ("tensorflow", "ai_edge_litert"), "ai_edge_litert", _load_litert),
}


def get_format(name: str) -> Format:
    if name not in FORMATS:
        raise ConfigError(f"format={name!r} is unknown; valid: {', '.join(FORMATS)}")
    return FORMATS[name]


def check_requirements(name: str) -> None:
    """One line if this process cannot export `name`: a missing package, or a backend other than TensorFlow."""
    missing = [module for module in get_format(name).needs if importlib.util.find_spec(module) is None]
    if missing:
        raise ConfigError(
            f"format={name} needs {', '.join(missing)}, not installed: pip install 'cnn-pipeline[tensorflow,export]'"
        )
    if keras.config.backend() != "tensorflow":
        raise ConfigError(
            f"format={name} is exported through TensorFlow but Keras runs on {keras.config.backend()}: "
            "run the export with KERAS_BACKEND=tensorflow"
        )


def serving_model(model: keras.Model) -> keras.Model:
    """What is exported: the inference model (main output, no loss) computing in float32, called once."""
    from pipeline.tracking.models import inference_model

    served = inference_model(float32_model(model))
    with warnings.catch_warnings():  # a named Input called with a plain array: Keras warns, then uses it
        warnings.filterwarnings("ignore", message="The structure of `inputs` doesn't match")
        served(np.zeros((1, *served.inputs[0].shape[1:]), np.float32))  # export needs a model that was called
    return served


def _write(model: keras.Model, name: str, folder: Path, contract: dict | None = None) -> Path:
    """Export as `name` into folder with its contract, and load it back once with its runtime (a converter may
    write a file its runtime refuses: both count as the format not taking the model)."""
    fmt = get_format(name)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / fmt.artefact
    model.export(str(path), format=fmt.keras_format, verbose=False)
    if contract is not None:
        attach_contract(name, path, contract)
    fmt.run(path, np.zeros((1, *model.inputs[0].shape[1:]), np.float32))
    return path


def attach_contract(name: str, path: Path, contract: dict) -> None:
    """The contract in the format's own place; for ONNX also its input and output renamed to the contract's."""
    if name == "onnx":
        _annotate_onnx(path, contract)
    elif name == "saved_model":
        (path / "assets").mkdir(exist_ok=True)
        contracts.write(contract, path / "assets")
    else:
        contracts.write(contract, path.parent)


def _annotate_onnx(path: Path, contract: dict) -> None:
    """Rename the graph's one input and output (tf2onnx names them after TensorFlow's tensors, `Identity:0`)
    and write the contract into metadata_props."""
    import onnx

    graph_model = onnx.load(str(path))
    graph = graph_model.graph
    renames = {graph.input[0].name: contract["input"]["name"], graph.output[0].name: contract["output"]["name"]}
    for value in (*graph.input, *graph.output, *graph.value_info):
        value.name = renames.get(value.name, value.name)
    for node in graph.node:
        node.input[:] = [renames.get(item, item) for item in node.input]
        node.output[:] = [renames.get(item, item) for item in node.output]
    del graph_model.metadata_props[:]
    for key, value in contracts.metadata_props(contract).items():
        graph_model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(graph_model)
    onnx.save(graph_model, str(path))


_REASONS = (  # (pattern in a converter's or runtime's message, the reason in plain words)
    (r'In Node, \("[^"]*", (\w+),', "ONNX has no {0} operator (tf2onnx copied TensorFlow's op as it is)"),
    (r"Tensorflow op \[[^\]]*: (\w+)\] is not supported", "tf2onnx cannot convert TensorFlow's {0} op"),
    (r"Flex ops: Flex(\w+)", "it needs TensorFlow's {0} op, outside LiteRT's built-in ops (the Flex delegate)"),
    (r"Select TensorFlow op\(s\)", "it needs TensorFlow ops outside LiteRT's built-in ops (the Flex delegate)"),
)


def _reason(err: BaseException, log: str = "") -> str:
    """Why a conversion failed, in one line: a known pattern of the message (or the captured log) in words,
    else the message's first line."""
    for pattern, words in _REASONS:
        if found := re.search(pattern, f"{log}\n{err}"):
            return words.format(*found.groups())
    text = next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)
    return text if len(text) <= 240 else text[:237] + "..."


@contextlib.contextmanager
def _quiet(captured: io.StringIO):
    """Converters talk: tf2onnx logs every unsupported op at ERROR, Keras warns about input structures, the
    TFLite converter prints. Their words go to `captured` (read for the reason), not to the user's terminal."""
    handler = logging.StreamHandler(captured)
    loggers = [logging.getLogger(name) for name in ("tf2onnx", "absl", "tensorflow")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.WARNING)
        logger.propagate = False
    try:
        with native_stderr_captured() as native, warnings.catch_warnings():  # what C++ converters write
            warnings.simplefilter("ignore")
            with contextlib.redirect_stdout(captured):
                yield
    finally:
        captured.write("\n".join(native))
        for logger, level in zip(loggers, levels, strict=True):
            logger.removeHandler(handler)
            logger.setLevel(level)
            logger.propagate = True


def unsupported_layer(model: keras.Model, name: str) -> tuple[keras.layers.Layer, str] | None:
    """The first kind of layer that `name` cannot take, exported alone on the shape it sees in the model, with
    the converter's or runtime's reason; None when every kind exports alone."""
    seen = set()
    for layer in model.layers:
        kind = (type(layer), layer.dtype_policy.name)
        if isinstance(layer, keras.layers.InputLayer) or kind in seen or not layer._inbound_nodes:
            continue
        seen.add(kind)
        seen_by_layer = layer._inbound_nodes[0].arguments.args[0]  # its input: a tensor or a list of them
        inputs = keras.tree.map_structure(lambda t: keras.Input(t.shape[1:], dtype=t.dtype), seen_by_layer)
        captured = io.StringIO()
        try:
            alone = keras.Model(inputs, keras.tree.flatten(layer(inputs))[0])
            alone(keras.tree.map_structure(lambda t: np.zeros((1, *t.shape[1:]), t.dtype), seen_by_layer))
            with tempfile.TemporaryDirectory() as scratch, _quiet(captured):
                _write(alone, name, Path(scratch))
        except Exception as err:  # noqa: BLE001 - any converter or runtime failure is the answer sought
            return layer, _reason(err, captured.getvalue())
    return None


def export(model: keras.Model, name: str, folder: str | Path, contract: dict | None = None) -> Path:
    """The model's inference form written as `name` in folder, carrying `contract` (pipeline.deploy.contract);
    a model the format cannot take is refused in one line naming the layer and why."""
    check_requirements(name)
    served = serving_model(model)
    captured = io.StringIO()
    try:
        with _quiet(captured):
            return _write(served, name, Path(folder), contract)
    except Exception as err:  # noqa: BLE001 - converters raise anything; the layer probe says which part
        found = unsupported_layer(served, name)
        where = f"layer {found[0].name!r} ({type(found[0]).__name__}): {found[1]}" if found else None
        others = ", ".join(f for f in FORMATS if f != name)
        raise ConfigError(
            f"format={name} cannot take model {model.name!r}: {where or _reason(err, captured.getvalue())}; "
            f"other formats: {others}"
        ) from None


def predict(name: str, path: str | Path, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """The exported artefact's outputs for images, from the format's own runtime, in batches."""
    return Exported(name, path).predict(images, batch_size)


class Exported:
    """An exported artefact loaded once in its format's runtime, with Keras' `predict` call: what the tasks'
    scoring runs, so an export is scored by the same code as the Keras model. A file its runtime cannot load
    is one line naming it."""

    def __init__(self, name: str, path: str | Path):
        from pipeline.errors import DataError

        self.name, self.path = name, Path(path)
        fmt = get_format(name)
        if not self.path.exists():
            raise DataError(f"{self.path}: no such {name} artefact")
        try:
            self.run = fmt.load(self.path)
        except Exception as err:  # noqa: BLE001 - each runtime raises its own kinds
            raise DataError(f"{self.path}: {fmt.runtime} cannot load it as {name}: {_reason(err)}") from None

    def predict(self, images: np.ndarray, batch_size: int = 32, verbose: int = 0) -> np.ndarray:
        images = np.asarray(images, np.float32)
        return np.concatenate([self.run(images[i : i + batch_size]) for i in range(0, len(images), batch_size)])


def metric_gate(
    name: str, metric: str, keras_value: float, exported_value: float, max_delta: float | None
) -> str | None:
    """The metric gate: the line naming both scores when exported - Keras of the test metric is larger in size
    than max_delta (None: not checked), else None."""
    delta = exported_value - keras_value
    if max_delta is None or abs(delta) <= max_delta:
        return None
    return (f"format={name}: {metric} {exported_value:.4f} vs Keras {keras_value:.4f} (delta {delta:+.4f}) exceeds "
            f"max_metric_delta={max_delta}")  # fmt: skip


@dataclass(frozen=True)
class Timing:
    """Latency of one image (median and 95th percentile over `runs` calls after warm-up) and throughput of
    batches of 32, in the runtime's own call."""

    median_ms: float
    p95_ms: float
    batch32_images_per_sec: float
    runs: int

    def metrics(self) -> dict[str, float]:
        return {"latency_batch1_median_ms": self.median_ms, "latency_batch1_p95_ms": self.p95_ms,
                "throughput_batch32_images_per_sec": self.batch32_images_per_sec}  # fmt: skip


def latency(run: Callable[[np.ndarray], np.ndarray], images: np.ndarray, runs: int = 30, warmup: int = 3) -> Timing:
    """`run` timed on the first image alone `runs` times and on batches of 32 (the images repeated)
    max(3, runs // 10) times, each after `warmup` untimed calls."""
    import time

    one = np.asarray(images[:1], np.float32)
    batch = np.resize(np.asarray(images, np.float32), (32, *images.shape[1:]))
    for _ in range(warmup):
        run(one), run(batch)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run(one)
        times.append(time.perf_counter() - start)
    rounds = max(3, runs // 10)
    start = time.perf_counter()
    for _ in range(rounds):
        run(batch)
    rate = 32 * rounds / (time.perf_counter() - start)
    return Timing(1000 * float(np.median(times)), 1000 * float(np.percentile(times, 95)), rate, runs)


def size_on_disk(path: Path) -> int:
    """Bytes of the artefact: the file, or every file under a SavedModel's folder."""
    path = Path(path)
    return path.stat().st_size if path.is_file() else sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


@dataclass(frozen=True)
class Row:
    """One line of `cnn export format=all`'s table."""

    format: str
    size: int | None
    parity: float
    metric: float | None
    delta: float | None
    timing: Timing
    verdict: str


def table(rows: list[Row], reference: Row, metric: str) -> str:
    """The formats side by side (Markdown): size on disk, parity, the metric and its delta from Keras, latency
    at batch 1 (median, p95) and throughput at batch 32, and pass/fail."""

    def cell(value, spec):
        return "–" if value is None else format(value, spec)

    head = (f"| format | size (MB) | parity max abs diff | {metric} | delta | batch 1 median (ms) | batch 1 p95 (ms) "
            "| batch 32 (img/s) | check |\n|---|---|---|---|---|---|---|---|---|\n")  # fmt: skip
    lines = [
        f"| {r.format} | {cell(r.size and r.size / 1e6, '.2f')} | {cell(r.parity, '.2e')} | {cell(r.metric, '.4f')} "
        f"| {cell(r.delta, '+.4f')} | {r.timing.median_ms:.2f} | {r.timing.p95_ms:.2f} | "
        f"{r.timing.batch32_images_per_sec:.0f} | {r.verdict} |\n"
        for r in (reference, *rows)
    ]
    runs = reference.timing.runs
    return head + "".join(lines) + f"\nLatency over {runs} calls after 3 warm-up calls, this machine, one process.\n"


@dataclass(frozen=True)
class Parity:
    """How an artefact's outputs compare with Keras' on the same images."""

    max_abs_diff: float  # over every output value (probabilities or boxes), float32
    values_over: int  # output values differing by more than the tolerance asked
    values: int
    class_agreement: float | None  # share of pixels (or images) whose most probable class is the same

    def line(self, tolerance: float) -> str:
        agree = "" if self.class_agreement is None else f", same class at {self.class_agreement:.2%}"
        return f"max |diff| {self.max_abs_diff:.3g}: {self.values_over} of {self.values} values > {tolerance}{agree}"


def compare(
    model: keras.Model,
    name: str,
    path: str | Path,
    images: np.ndarray,
    batch_size: int = 32,
    tolerance: float = 1e-4,
    expected: np.ndarray | None = None,
    loaded: Exported | None = None,
) -> Parity:
    """The artefact (run by its format's runtime, `loaded` when already loaded) against the Keras model in
    float32, on images (`expected`: the float32 Keras outputs, when already computed)."""
    from pipeline.deploy.serving import Predictor

    if expected is None:
        expected = Predictor(serving_model(model), batch_size).predict(images)
    exported = (loaded or Exported(name, path)).predict(images, batch_size)
    gap = np.abs(exported - expected)
    classes = model.outputs[0].shape[-1] > 1 and np.allclose(expected.sum(-1), 1, atol=1e-3)  # probabilities
    agreement = float(np.mean(exported.argmax(-1) == expected.argmax(-1))) if classes else None
    return Parity(float(gap.max()), int((gap > tolerance).sum()), int(gap.size), agreement)


def parity(model: keras.Model, name: str, path: str | Path, images: np.ndarray, batch_size: int = 32) -> float:
    """max |exported - Keras| over every output value of images (probabilities or boxes), in float32."""
    return compare(model, name, path, images, batch_size).max_abs_diff


def precision_gap(
    model: keras.Model, images: np.ndarray, batch_size: int = 32, float32_outputs: np.ndarray | None = None
) -> float | None:
    """max |float32 - trained policy| of the Keras model's outputs on images; None when it was float32 already
    (the export is float32: this says what leaving mixed precision changes)."""
    from pipeline.deploy.serving import Predictor
    from pipeline.tracking.models import inference_model

    if is_float32(model):
        return None
    if float32_outputs is None:
        float32_outputs = Predictor(serving_model(model), batch_size).predict(images)
    trained = Predictor(inference_model(model), batch_size).predict(images)
    return float(np.max(np.abs(float32_outputs - trained)))
