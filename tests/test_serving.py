"""A logged model loads and predicts where `pipeline` was never imported, and serves over HTTP."""

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
    out[name] = mlflow.pyfunc.load_model(uri).predict(images).tolist()
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


def test_the_logged_signature_names_images_in_and_probabilities_out(logged):
    import mlflow

    _, uri, found = logged
    mlflow.set_tracking_uri(uri)
    info = mlflow.models.get_model_info(found["segnet"][0])
    assert info.signature.inputs.to_dict()[0]["name"] == "images"
    output = info.signature.outputs.to_dict()[0]
    assert output["name"] == "probabilities" and list(output["tensor-spec"]["shape"]) == [-1, 64, 64, 4]
    assert info.flavors["python_function"]["loader_module"] == "pipeline.deploy.serving"
    assert "compile_config" not in str(info.flavors)  # an inference model: no loss, no optimizer


@pytest.mark.slow
def test_mlflow_models_serve_answers_with_the_keras_prediction(logged, tmp_path):
    """`mlflow models serve` on loopback: SegNet's probabilities over HTTP equal the Keras model's."""
    _, uri, found = logged
    model_uri, images, expected = found["segnet"]
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
            data=json.dumps({"inputs": images.tolist()}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as answer:
            predicted = np.asarray(json.loads(answer.read())["predictions"], np.float32)
        np.testing.assert_allclose(predicted, expected, atol=1e-5)
    finally:
        server.terminate()
        server.wait(timeout=30)
