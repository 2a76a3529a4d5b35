"""Safety: no code runs from a model file, archives stay inside their folder, secrets stay out of MLflow,
and the MLflow UI listens on localhost only."""

import io
import os
import signal
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import keras
import mlflow
import numpy as np
import pytest
from PIL import Image

from helpers import free_port, wait_for
from pipeline import tracking
from pipeline.config import checkout
from pipeline.data.oxford_pets import extract_archives, pet_pairs
from pipeline.errors import DataError
from pipeline.safety import REDACTED, redact_params, redact_text, safe_extract


def test_model_with_a_lambda_layer_is_refused(tmp_path):
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2)(inputs))
    path = tmp_path / "lambda.keras"
    model.save(path)
    with pytest.raises(DataError) as caught:
        tracking.load_model(str(path), f"sqlite:///{tmp_path}/mlflow.db")
    message = str(caught.value)
    assert message.startswith(f"{path}: refused to load: the model file holds Python code (e.g. a Lambda layer)")
    assert "safe_mode" in message


def tar_with(members: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("members", "links", "culprit"),
    [
        ({"images/a.jpg": b"x", "../../escaped.txt": b"pwned"}, None, "member '../../escaped.txt'"),
        ({"images/../../escaped.txt": b"pwned"}, None, "member 'images/../../escaped.txt'"),
        ({"/tmp/escaped.txt": b"pwned"}, None, "member '/tmp/escaped.txt'"),
        ({"images/a.jpg": b"x"}, {"images/evil": "../../../etc"}, "link 'images/evil' -> '../../../etc'"),
    ],
)
def test_archive_members_outside_the_folder_are_refused(tmp_path, members, links, culprit):
    root = tmp_path / "data" / "oxford-iiit-pet"
    root.mkdir(parents=True)
    (root / "images.tar.gz").write_bytes(tar_with(members, links))
    with pytest.raises(DataError) as caught:
        extract_archives(root)
    assert str(caught.value).startswith(f"{root / 'images.tar.gz'}: {culprit}")
    assert "refusing to extract" in str(caught.value)
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "data" / "escaped.txt").exists()
    assert not (root / "images").exists()  # nothing extracted at all


def test_zip_slip_is_refused(tmp_path):
    archive = tmp_path / "set.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("../evil.txt", "pwned")
    with pytest.raises(DataError, match=r"member '../evil.txt' would be written outside"):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists()


def test_pet_archives_as_downloaded_are_unpacked_and_read(tmp_path):
    jpeg, trimap = io.BytesIO(), io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(jpeg, format="JPEG")
    Image.fromarray(np.ones((8, 8), np.uint8)).save(trimap, format="PNG")
    (tmp_path / "images.tar.gz").write_bytes(tar_with({"images/cat_1.jpg": jpeg.getvalue()}))
    lists = {"annotations/trainval.txt": b"cat_1 1 1 1\n", "annotations/test.txt": b"cat_1 1 1 1\n"}
    (tmp_path / "annotations.tar.gz").write_bytes(
        tar_with({**lists, "annotations/trimaps/cat_1.png": trimap.getvalue()})
    )
    extract_archives(tmp_path)
    [(image, mask)] = pet_pairs(tmp_path, "test")
    assert image.is_file() and mask.is_file()


def test_secrets_are_redacted_from_params_and_texts():
    environ = {"MLFLOW_TRACKING_TOKEN": "tok-123456", "AWS_SECRET_ACCESS_KEY": "abcdEFGH", "HOME": "/root"}
    params = {
        "tracking.uri": "https://alice:hunter22@mlflow.example.com",
        "data.root": "/data/tok-123456/set",  # an interpolated secret inside another value
        "backend.api_key": "plain-value",
        "optimizer.lr": "0.003",
        "paths.root": "/root",
    }
    redacted = redact_params(params, environ)
    assert redacted["tracking.uri"] == f"https://alice:{REDACTED}@mlflow.example.com"
    assert redacted["data.root"] == f"/data/{REDACTED}/set" and redacted["backend.api_key"] == REDACTED
    assert redacted["optimizer.lr"] == "0.003" and redacted["paths.root"] == "/root"  # HOME is no secret
    text = "- +backend.api_key=s3cr3t\n- tracking.uri=https://bob:pw@h\nkey: abcdEFGH\nseed: 42\n"
    assert redact_text(text, environ) == (
        f"- +backend.api_key={REDACTED}\n- tracking.uri=https://bob:{REDACTED}@h\nkey: {REDACTED}\nseed: 42\n"
    )


def test_logged_params_and_config_files_hold_no_secret(tmp_path, monkeypatch):
    monkeypatch.setenv("MY_SERVICE_TOKEN", "very-secret-value")
    hydra_dir = tmp_path / ".hydra"
    hydra_dir.mkdir()
    (hydra_dir / "overrides.yaml").write_text("- data.root=/data/very-secret-value\n- +service.password=pw1234\n")
    with tracking.run(f"sqlite:///{tmp_path}/mlflow.db", "secrets", artifact_root=str(tmp_path / "art")) as active:
        tracking.log_params({"data": {"root": "/data/very-secret-value"}, "service": {"password": "pw1234"}})
        tracking.log_dir(hydra_dir, "config")
        tracking.log_text("service:\n  password: pw1234\n", "config/resolved.yaml")
    run = mlflow.get_run(active.info.run_id)
    assert run.data.params == {"data.root": f"/data/{REDACTED}", "service.password": REDACTED}
    for artifact in ("config/overrides.yaml", "config/resolved.yaml"):
        text = Path(mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path=artifact)).read_text()
        assert "very-secret-value" not in text and "pw1234" not in text and REDACTED in text


def listening_addresses(port: int) -> set[str]:
    """The local addresses (hex, as the kernel lists them) of the sockets listening on `port`."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.add(address)
    return found


def test_cnn_ui_serves_the_store_on_loopback(tmp_path):
    """`cnn ui` (what `make ui` runs) starts the MLflow UI over the given store, bound to 127.0.0.1."""
    port = free_port()
    log = tmp_path / "ui.log"
    command = [sys.executable, "-m", "pipeline.commands.cli", "ui", "--uri", f"sqlite:///{tmp_path}/mlflow.db"]
    with open(log, "w") as out:
        process = subprocess.Popen([*command, "--port", str(port)], stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)  # fmt: skip
        try:
            wait_for(f"http://127.0.0.1:{port}/health", process, log)
            assert listening_addresses(port) == {"0100007F"}  # 127.0.0.1 only (/proc/net/tcp's hex)
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=10)
    assert "$(BIN)/cnn ui" in (checkout() / "Makefile").read_text()
