"""A logged model loads and predicts where `pipeline` was never imported, and serves over HTTP."""

import base64
import json
import os
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

from helpers import free_port
from pipeline import tracking
from pipeline.models import build_model

# (model config, input size, channels, classes, options): the default U-Net, SegNet (unpooling switches),
# the paper's U-Net (mirror padding, cropped skips) and LeNet-5 (a classifier)
MODELS = {
    "unet": (64, 3, 4, {"depth": 2, "base_filters": 4}),
    "segnet": (64, 3, 4, {"depth": 2, "base_filters": 4}),
    "unet_paper": (64, 3, 4, {"depth": 2, "base_filters": 4, "overlap_tile": True}),
    "lenet5": (32, 1, 10, {}),
}

FRESH = r"""
import json, os, sys
sys.path = [p for p in sys.path if not p.rstrip("/").endswith("/src")]  # this checkout's package: gone
assert not any(os.path.isfile(os.path.join(p, "pipeline", "serving.py")) for p in sys.path), "pipeline importable"
import mlflow, numpy as np
mlflow.set_tracking_uri(sys.argv[1])
out = {}
for name, uri in json.loads(sys.argv[2]).items():
    images = np.load(sys.argv[3] + f"/{name}.npy")
    answers = mlflow.pyfunc.load_model(uri).predict({"images": list(images)}, params={"probabilities": True})
    out[name] = [answer["probabilities"] for answer in answers]
out["pipeline_from"] = sys.modules["pipeline"].__file__
print("RESULT " + json.dumps(out))
"""


FRESH_KERAS = r"""
import json, sys
sys.path = [p for p in sys.path if not p.rstrip("/").endswith("/src")]
import mlflow, numpy as np
mlflow.set_tracking_uri(sys.argv[1])
out = {}
for name, uri in json.loads(sys.argv[2]).items():
    model = mlflow.keras.load_model(uri)
    out[name] = model.predict(np.load(sys.argv[3] + f"/{name}.npy"), verbose=0).tolist()
    out[name + "_compiled"] = model.compiled
print("RESULT " + json.dumps(out))
"""


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """Each model built with random weights, logged to a fresh store; with its test images and its Keras
    predictions."""
    folder = tmp_path_factory.mktemp("serving")
    uri = f"sqlite:///{folder}/mlflow.db"
    rng = np.random.default_rng(0)
    found = {}
    with tracking.run(uri, "serving", "models", str(folder / "artifacts"), {"stage": "test"}):
        for name, (size, channels, classes, options) in MODELS.items():
            model = build_model(name, (size, size, channels), classes, **options)
            images = rng.uniform(0, 255, (3, size, size, channels)).astype(np.float32)
            model_uri = tracking.log_keras_model(model, images[:2])
            np.save(folder / f"{name}.npy", images)
            expected = np.asarray(tracking.inference_model(model).predict(images, verbose=0))
            found[name] = (model_uri, images, expected)
    return folder, uri, found


def test_every_model_loads_as_pyfunc_in_a_process_that_never_imported_pipeline(logged):
    folder, uri, found = logged
    uris = {name: model_uri for name, (model_uri, _, _) in found.items()}
    done = subprocess.run([sys.executable, "-c", FRESH, uri, json.dumps(uris), str(folder)], capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads([line for line in done.stdout.splitlines() if line.startswith("RESULT ")][0][7:])
    assert "/code/pipeline/" in result.pop("pipeline_from")  # the package came with the model
    for name, (_, _, expected) in found.items():
        predicted = np.asarray(result[name], np.float32)
        assert predicted.shape == expected.shape, name
        np.testing.assert_allclose(predicted, expected, atol=1e-5, err_msg=name)
        if name != "lenet5":  # probabilities per pixel: they sum to one over the classes
            np.testing.assert_allclose(predicted.sum(-1), 1.0, atol=1e-4)


def test_models_of_keras_layers_load_with_the_keras_flavor_in_a_fresh_process(logged):
    """mlflow.keras.load_model needs no pipeline for models made of Keras' own layers (the default U-Net,
    LeNet-5): the logged model is an inference model, without the training loss that named a custom class."""
    folder, uri, found = logged
    uris = {name: found[name][0] for name in ("unet", "lenet5")}
    done = subprocess.run([sys.executable, "-c", FRESH_KERAS, uri, json.dumps(uris), str(folder)],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads([line for line in done.stdout.splitlines() if line.startswith("RESULT ")][0][7:])
    for name in uris:
        np.testing.assert_allclose(np.asarray(result[name]), found[name][2], atol=1e-5, err_msg=name)
        assert result[name + "_compiled"] is False  # no loss, no optimizer


def test_the_served_model_takes_an_image_batch_as_it_is_without_a_keras_warning():
    """The model as logged and exported takes its one input as a tensor: built on a list of one, Keras warns at
    every call (each picture of `cnn visualize`, each batch of a server) that the images' structure does not match."""
    import warnings

    model = build_model("lenet5", (32, 32, 1), 10)
    served = tracking.inference_model(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        served(np.zeros((2, 32, 32, 1), np.float32))
    assert served.input.name == model.inputs[0].name == "images"


def test_the_logged_signature_takes_images_of_any_kind_and_the_probabilities_param(logged):
    import mlflow

    _, uri, found = logged
    mlflow.set_tracking_uri(uri)
    info = mlflow.models.get_model_info(found["segnet"][0])
    assert [(c["name"], c["type"]) for c in info.signature.inputs.to_dict()] == [("images", "any")]
    assert [(p["name"], p["default"]) for p in info.signature.params.to_dict()] == [("probabilities", False)]
    assert info.flavors["python_function"]["loader_module"] == "pipeline.deploy.serving"
    assert "compile_config" not in str(info.flavors)  # an inference model: no loss, no optimizer


def test_images_of_any_size_are_answered_at_their_own_size_as_cnn_predict_does(logged):
    """Arrays and encoded PNG bytes of other sizes than the model's: each answer is a mask at the image's own
    size, the one pipeline.tasks.segmentation.predict_resized (cnn predict's resize mode) gives."""
    import base64
    import io

    import mlflow
    from PIL import Image

    from pipeline.data.folders import read_images
    from pipeline.tasks.segmentation import predict_resized

    folder, uri, found = logged
    mlflow.set_tracking_uri(uri)
    served = mlflow.pyfunc.load_model(found["unet"][0])
    keras_model = tracking.load_model(found["unet"][0], uri)[0]
    rng = np.random.default_rng(3)
    small, large = rng.integers(0, 256, (40, 52, 3), np.uint8), rng.integers(0, 256, (90, 71, 3), np.uint8)
    encoded = io.BytesIO()
    Image.fromarray(large).save(encoded, format="PNG")
    answers = served.predict({"images": [small, base64.b64encode(encoded.getvalue()).decode()]})
    Image.fromarray(large).save(folder / "large.png")
    [read] = read_images([folder / "large.png"], 3)  # what cnn predict reads from the same file
    for answer, image in zip(answers, (small, read)):
        mask = np.asarray(answer["mask"])
        assert mask.shape == image.shape[:2]
        assert np.array_equal(mask, predict_resized(keras_model, image).argmax(-1))
    classifier = mlflow.pyfunc.load_model(found["lenet5"][0])
    [answer] = classifier.predict({"images": [rng.integers(0, 256, (50, 45), np.uint8)]})
    assert 0 <= answer["index"] < 10 and answer["label"] == str(answer["index"])


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("not base64!", r"images\[0\]: text that is not base64"),
        (base64.b64encode(b"plain text").decode(), r"images\[0\]: 10 bytes that are no image file"),
        (np.full((8, 8, 3), 300.0), r"images\[0\]: values 300..300 outside 0..255 and the model maps none"),
        (np.zeros((8, 8, 2)), r"images\[0\]: an array of shape \(8, 8, 2\)"),
    ],
)
def test_a_request_the_model_cannot_read_is_one_line_naming_the_image(logged, item, message):
    from pipeline.deploy.serving import Predictor
    from pipeline.errors import DataError

    _, uri, found = logged
    model = tracking.load_model(found["unet"][0], uri)[0]
    with pytest.raises(DataError, match=message):
        Predictor(model).predict({"images": [item]})


@pytest.mark.slow
def test_mlflow_models_serve_answers_two_pngs_of_different_sizes_with_masks_of_those_sizes(logged, tmp_path):
    """`mlflow models serve` on loopback, the README's request: two PNG files as base64 (SegNet, 64x64 inputs,
    sent 40x52 and 90x71), answered with masks of their own sizes, the ones the Keras model gives."""
    import io

    from PIL import Image

    from pipeline.data.folders import outputs_at_size

    _, uri, found = logged
    model_uri = found["segnet"][0]
    keras_model = tracking.inference_model(tracking.load_model(model_uri, uri)[0])
    rng = np.random.default_rng(5)
    images = [rng.integers(0, 256, size, np.uint8) for size in ((40, 52, 3), (90, 71, 3))]
    encoded = []
    for image in images:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        encoded.append(base64.b64encode(buffer.getvalue()).decode())
    port = free_port()
    bin_dir = os.path.dirname(sys.executable)  # mlflow starts uvicorn by name: the venv's bin on PATH, as activated
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    mlflow_cli = os.path.join(bin_dir, "mlflow")
    server = subprocess.Popen([mlflow_cli, "models", "serve", "-m", model_uri, "--env-manager", "local", "--host",
                               "127.0.0.1", "--port", str(port)], env=env, cwd=tmp_path, stdout=subprocess.DEVNULL,
                              stderr=open(tmp_path / "serve.log", "w"))  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as ping:
                    if ping.status == 200:
                        break
            except OSError:
                time.sleep(1)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=json.dumps({"dataframe_records": [{"images": text} for text in encoded]}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as answer:
            predictions = json.loads(answer.read())["predictions"]
        for image, predicted in zip(images, predictions, strict=True):
            mask = np.asarray(predicted["mask"])
            assert mask.shape == image.shape[:2]
            expected = outputs_at_size(lambda x: keras_model.predict(x, verbose=0), image, (64, 64)).argmax(-1)
            assert (mask == expected).mean() >= 0.999  # another process, the same float32 model
    finally:
        server.terminate()
        server.wait(timeout=30)
