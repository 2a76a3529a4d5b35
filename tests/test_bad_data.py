"""Bad data stops the train stage with one line naming the file at fault (and leaves no MLflow run RUNNING);
the loaders, fed random bytes and random shapes, only ever raise the project's own DataError."""

import itertools
from pathlib import Path

import mlflow
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from helpers import find_runs, run_here, runs_left_running
from pipeline.commands import train
from pipeline.data.classification import image_folder, read_idx
from pipeline.data.folders import BadFiles, load_pairs, load_split
from pipeline.data.samples import decode_all
from pipeline.errors import DataError

SPLITS = {"train": 4, "val": 2, "test": 2}


def write_set(root, size=16):
    """A valid two-class folder set: stripes on noise, mask 1 under the stripe."""
    rng = np.random.default_rng(0)
    for split, count in SPLITS.items():
        (root / split / "images").mkdir(parents=True)
        (root / split / "masks").mkdir(parents=True)
        for i in range(count):
            image = rng.integers(0, 120, (size, size, 3), dtype=np.uint8)
            mask = np.zeros((size, size), np.uint8)
            mask[:, i : i + 4] = 1
            image[mask == 1] = 250
            Image.fromarray(image).save(root / split / "images" / f"{i}.png")
            Image.fromarray(mask).save(root / split / "masks" / f"{i}.png")


def break_set(root, breakage: str):
    """Break the set one way; returns the path the error message must name."""
    image, mask = root / "train" / "images" / "1.png", root / "train" / "masks" / "1.png"
    if breakage == "corrupt_image":
        image.write_bytes(b"\x89PNG\r\n\x1a\n but then no PNG at all")
    elif breakage == "truncated_image":
        image.write_bytes(image.read_bytes()[:70])
    elif breakage == "non_image_file":
        image = root / "train" / "images" / "notes.txt"
        image.write_text("not a picture")
    elif breakage == "size_mismatch":
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(mask)
        return mask
    elif breakage == "label_out_of_range":
        Image.fromarray(np.full((16, 16), 5, np.uint8)).save(mask)
        return mask
    elif breakage == "grayscale_image":
        Image.open(image).convert("L").save(image)
    elif breakage == "empty_split":
        for path in (root / "val" / "images").iterdir():
            path.unlink()
        return root / "val" / "images"
    elif breakage == "missing_folder":
        for path in (root / "test" / "masks").iterdir():
            path.unlink()
        (root / "test" / "masks").rmdir()
        return root / "test" / "masks"
    return image


@pytest.fixture
def folder_stage(project, compose_config, capsys):
    """folder_stage(*overrides) -> (exit code, stderr) of the train stage on data=folder at project/set."""

    def _run(*overrides):
        uri = f"sqlite:///{project}/mlflow.db"
        cfg = compose_config(
            [
                f"paths.root={project}",
                f"tracking.uri={uri}",
                "data=folder",
                f"data.root={project}/set",
                "data.classes=[background,stripe]",
                "data.image_size=16",
                "trainer=debug",
                "model.depth=2",
                "model.base_filters=4",
                *overrides,
            ]
        )
        with pytest.raises(SystemExit) as exited:
            train.main(cfg)
        assert not runs_left_running(project)
        return exited.value.code, capsys.readouterr().err

    return _run


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        ("corrupt_image", "not a readable image"),
        ("truncated_image", "not a readable image"),
        ("non_image_file", "not an image file; valid suffixes: .png, .jpg"),
        ("size_mismatch", "mask is 8x8 but its image is 16x16"),
        ("label_out_of_range", "label 5 out of range, valid labels are 0..1; valid: data.mask_values"),
        ("grayscale_image", "grayscale image (mode L) where RGB is expected; valid: data.channels=1 for a grey model"),
        ("empty_split", "no images"),
        ("missing_folder", "folder not found"),
    ],
)
def test_bad_data_stops_the_stage_naming_the_file(project, folder_stage, breakage, message):
    write_set(project / "set")
    culprit = break_set(project / "set", breakage)
    code, stderr = folder_stage()
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1, stderr[-2000:]
    assert f"error: {culprit}: " in errors[0] and message in errors[0]


def test_skip_policy_skips_and_records_each_bad_file(tmp_path):
    write_set(tmp_path)
    for breakage in ("corrupt_image", "non_image_file"):
        break_set(tmp_path, breakage)
    Image.fromarray(np.full((16, 16), 9, np.uint8)).save(tmp_path / "train" / "masks" / "2.png")
    bad = BadFiles("skip")
    images, masks = load_split(tmp_path, "train", 2, bad=bad)
    assert len(images) == 2 == len(masks)  # 0.png and 3.png are left of 4
    assert sorted(p.rsplit("/", 1)[-1] for p in bad.skipped) == ["1.png", "2.png", "notes.txt"]
    with pytest.raises(DataError, match="notes.txt: not an image file"):
        load_split(tmp_path, "train", 2)  # the default policy stops at the first one


@pytest.mark.slow
def test_skip_policy_trains_and_logs_the_count(project):
    write_set(project / "set")
    culprits = [break_set(project / "set", b) for b in ("non_image_file", "grayscale_image")]
    culprits.append(project / "set" / "val" / "images" / "0.png")
    culprits[-1].write_bytes(b"GIF89a, or so it says")
    folder = ["data=folder", f"data.root={project}/set", "data.classes=[background,stripe]", "data.image_size=16"]
    tiny = ["trainer=debug", "data.image_size=16", "model.depth=2", "model.base_filters=4", "trainer.verbose=0"]
    result = run_here("train", project, *folder, *tiny, "tracking.log_model=false", "data.on_bad_file=skip")
    assert result.returncode == 0, result.stderr[-3000:]
    logged = result.stdout + result.stderr  # Hydra sends log lines to stdout
    assert "[WARNING] - skipping" in logged and "notes.txt: not an image file" in logged
    client = mlflow.MlflowClient(f"sqlite:///{project}/mlflow.db")
    [run] = find_runs(client, "folder")
    assert run.info.status == "FINISHED" and run.data.metrics["skipped_files"] == 3
    listing = Path(client.download_artifacts(run.info.run_id, "data/skipped_files.txt", str(project))).read_text()
    assert all(str(path) in listing for path in culprits)


def _caught(load):
    """Run a loader; anything but success or a DataError (a PIL, NumPy or OS error leaking out) fails."""
    try:
        load()
    except DataError as err:
        assert str(err).strip() and "\n" not in str(err)


EXAMPLE = itertools.count()
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(content=st.binary(max_size=600), suffix=st.sampled_from([".png", ".jpg", ".bmp", ".tif", ".txt"]))
def test_random_bytes_as_image_files_give_data_errors(tmp_path, content, suffix):
    root = tmp_path / f"fuzz{next(EXAMPLE)}"  # a fresh folder each example (image_folder caches by path)
    for folder in ("train/images", "train/masks", "cls/a", "cls/b"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    image = root / "train" / "images" / f"x{suffix}"
    image.write_bytes(content)
    (root / "train" / "masks" / "x.png").write_bytes(content)
    _caught(lambda: load_split(root, "train", 2, image_size=8))
    _caught(lambda: load_split(root, "train", 2, bad=BadFiles("skip")))
    for name in ("a", "b"):
        for i in range(3):
            (root / "cls" / name / f"{i}{suffix}").write_bytes(content)
    _caught(lambda: [decode_all(s) for s in image_folder(root / "cls", None, 8, 0.3, 0.3, 0).values()])
    idx = root / "x-idx3-ubyte"
    idx.write_bytes(content)
    _caught(lambda: read_idx(idx))


@FUZZ
@given(
    height=st.integers(1, 12),
    width=st.integers(1, 12),
    mask_height=st.integers(1, 12),
    channels=st.sampled_from([1, 2, 3, 4]),
    max_label=st.integers(0, 255),
    image_size=st.one_of(st.none(), st.integers(1, 10)),
    num_classes=st.integers(1, 6),
)
def test_random_shapes_and_labels_give_data_errors(
    tmp_path, height, width, mask_height, channels, max_label, image_size, num_classes
):
    rng = np.random.default_rng(height * 31 + width)
    pixels = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
    image_path, mask_path = tmp_path / "shape.png", tmp_path / "shape_mask.png"
    Image.fromarray(pixels[..., 0] if channels == 1 else pixels).save(image_path)  # L, LA, RGB or RGBA
    Image.fromarray(rng.integers(0, max_label + 1, (mask_height, width), dtype=np.uint8)).save(mask_path)
    for grayscale in ("error", "convert"):
        _caught(lambda g=grayscale: load_pairs([(image_path, mask_path)], num_classes, image_size, grayscale=g))
