"""Users' own data read right: every bit depth and channel count (data.intensity, data.channels), every common
mask convention (data.mask_values, palette PNGs, data.class_colors, a void loss.ignore_label), and a data
profile that warns before a wasted run. References are hand-worked values and NumPy, never the code under test."""

import json

import numpy as np
import pytest
from PIL import Image

from pipeline.data import cells
from pipeline.data.folders import ImageReader, MaskReader
from pipeline.data.pixels import Intensity, served_mapping
from pipeline.data.profile import check_profile, profile
from pipeline.data.sources import split_samples
from pipeline.errors import ConfigError, DataError
from pipeline.evaluation.metrics import confusion_matrix, segmentation_scores

SPLITS = {"train": 48, "val": 16, "test": 16}


def write_cells(root, bits=16, counts=SPLITS):
    """The generated cells set (pipeline.data.cells): 16-bit TIFFs, or the same values scaled to 8-bit PNGs."""
    return cells.write_cells(root, counts, bits)


def folder(compose_config, root, *overrides):
    return compose_config(["data=folder", f"data.root={root}", "data.classes=[background,cell]", *overrides]).data


def test_16_bit_files_are_read_at_full_depth_and_never_clipped_unasked(tmp_path):
    values = np.array([[0, 1000, 4095, 65535]], np.uint16)
    for suffix in (".png", ".tif"):
        path = tmp_path / f"grey16{suffix}"
        Image.fromarray(values).save(path)
        assert np.asarray(Image.open(path).convert("L")).max() == 255  # what Pillow alone does: 4095 -> 255
        auto = np.asarray(ImageReader(1)(path))
        assert auto.tolist() == [[0, 4, 16, 255]]  # round(v * 255 / 65535): the dtype's full range
        ranged = np.asarray(ImageReader(1, intensity=Intensity("range", (1000, 4095)))(path))
        assert ranged.tolist() == [[0, 0, 255, 255]]  # asked for: below and above the range clip
    colour = np.stack([values, values // 2, values // 4], -1)
    import cv2

    cv2.imwrite(str(tmp_path / "rgb16.png"), colour[..., ::-1])  # OpenCV writes BGR
    assert np.asarray(Image.open(tmp_path / "rgb16.png").convert("RGB"))[0, 2].tolist() == [15, 7, 3]  # high byte
    read = np.asarray(ImageReader(3, intensity=Intensity("range", (0, 4095)))(tmp_path / "rgb16.png"))
    assert read[0, 2].tolist() == [255, 127, 64]  # 4095, 2047, 1023 of 4095 (x 255 = 127.47, 63.7), R, G, B


def test_float_tiffs_auto_is_0_to_1_and_values_outside_name_the_file(tmp_path):
    Image.fromarray(np.array([[0.0, 0.25, 1.0]], np.float32)).save(tmp_path / "f.tif")
    assert np.asarray(ImageReader(1)(tmp_path / "f.tif")).tolist() == [[0, 64, 255]]
    Image.fromarray(np.array([[-0.5, 3.0]], np.float32)).save(tmp_path / "wide.tif")
    with pytest.raises(DataError, match=r"wide.tif: float image with values -0.5..3, outside 0..1.*intensity.range"):
        ImageReader(1)(tmp_path / "wide.tif")


def test_percentile_mapping_matches_numpy_per_image(tmp_path):
    values = np.random.default_rng(1).integers(900, 4000, (20, 30)).astype(np.uint16)
    Image.fromarray(values).save(tmp_path / "p.png")
    lo, hi = np.percentile(values, [1, 99.8])
    expected = np.rint(np.clip((values - lo) * 255 / (hi - lo), 0, 255)).astype(np.uint8)
    got = np.asarray(ImageReader(1, intensity=Intensity("percentile", percentiles=(1, 99.8)))(tmp_path / "p.png"))
    assert np.array_equal(got, expected)


def test_bad_intensity_settings_are_one_line():
    with pytest.raises(ConfigError, match=r"data.intensity.range=None is invalid for mode=range.*\[0,4095\]"):
        Intensity.from_config({"mode": "range"})
    with pytest.raises(ConfigError, match="data.intensity.mode='log' is unknown; valid: auto, range, percentile"):
        Intensity.from_config({"mode": "log"})


def test_a_16_bit_set_decodes_to_exactly_its_8_bit_copy_scaled_by_hand(tmp_path, compose_config):
    deep, shallow = write_cells(tmp_path / "deep"), write_cells(tmp_path / "shallow", bits=8)
    mapped = folder(compose_config, deep, "data.intensity.mode=range", "data.intensity.range=[0,4095]",
                    "data.mask_values=[0,255]", "data.image_size=32")  # fmt: skip
    plain = folder(compose_config, shallow, "data.mask_values=[0,255]", "data.image_size=32")
    a, b = split_samples(mapped, deep)["train"], split_samples(plain, shallow)["train"]
    assert a.image_shape == b.image_shape == (32, 32, 1)  # data.channels=auto: grey files, a grey model
    for i in (0, 7, 31):
        (image_a, mask_a), (image_b, mask_b) = a.read(i), b.read(i)
        assert np.array_equal(image_a, image_b) and np.array_equal(mask_a, mask_b)
        assert set(np.unique(mask_a)) <= {0, 1}


def palette_png(path, indices, palette):
    image = Image.fromarray(indices.astype(np.uint8), mode="P")
    image.putpalette(palette)
    image.save(path)


def test_masks_in_every_common_convention_read_as_the_same_indices(tmp_path):
    labels = np.array([[0, 1, 2], [2, 1, 0]], np.uint8)
    Image.fromarray(labels * 100).save(tmp_path / "values.png")  # 0, 100, 200
    palette_png(tmp_path / "palette.png", labels, [0, 0, 0, 128, 0, 0, 0, 128, 0])  # VOC: colour is not class
    colours = np.array([[0, 0, 0], [128, 64, 128], [70, 70, 70]], np.uint8)  # CamVid-style road, building
    Image.fromarray(colours[labels]).save(tmp_path / "colours.png")
    assert np.array_equal(MaskReader(3, values=(0, 100, 200))(tmp_path / "values.png"), labels)
    assert np.array_equal(MaskReader(3)(tmp_path / "palette.png"), labels)
    Image.fromarray(np.stack([labels, np.full_like(labels, 255)], -1), mode="LA").save(tmp_path / "alpha.png")
    assert np.array_equal(MaskReader(3)(tmp_path / "alpha.png"), labels)  # grey + alpha: the alpha is no class
    assert np.array_equal(MaskReader(3, colors=tuple(map(tuple, colours.tolist())))(tmp_path / "colours.png"), labels)
    with pytest.raises(DataError, match=r"colour-coded mask .* data.class_colors"):
        MaskReader(3)(tmp_path / "colours.png")
    with pytest.raises(DataError, match=r"colours \[70,70,70\] are none of data.class_colors"):
        MaskReader(3, colors=((0, 0, 0), (128, 64, 128), (1, 2, 3)))(tmp_path / "colours.png")


def test_a_0_255_mask_without_its_option_names_the_file_the_values_and_the_fix(tmp_path):
    Image.fromarray(np.array([[0, 255]], np.uint8)).save(tmp_path / "m.png")
    with pytest.raises(DataError) as caught:
        MaskReader(2)(tmp_path / "m.png")
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'm.png'}: mask values [0, 255]; label 255 out of range")
    assert "valid: data.mask_values=[0, 255]" in message and "loss.ignore_label=255" in message


def test_a_void_label_is_kept_and_ignored_in_the_iou_as_worked_by_hand(tmp_path):
    truth = np.array([[0, 0, 1, 1], [0, 255, 255, 1]], np.uint8)  # VOC: 255 on the object boundary
    palette_png(tmp_path / "void.png", truth, [0, 0, 0, 128, 0, 0] + [0, 0, 0] * 253 + [224, 224, 192])
    read = MaskReader(2, ignore_label=255)(tmp_path / "void.png")
    assert np.array_equal(read, truth)
    with pytest.raises(DataError, match="label 255 out of range"):
        MaskReader(2)(tmp_path / "void.png")
    predicted = np.array([[0, 1, 1, 1], [0, 0, 1, 0]], np.uint8)
    # by hand, over the 6 non-void pixels: class 0 TP 2 (0,0),(1,0) FP 1 (1,3) FN 1 (0,1) -> IoU 2/4;
    # class 1 TP 2 (0,2),(0,3) FP 1 (0,1) FN 1 (1,3) -> IoU 2/4; mean 0.5
    scores = segmentation_scores(confusion_matrix(read, predicted, 2, 255), ["background", "object"])
    assert scores["mean_iou"] == pytest.approx(0.5)
    import keras

    metric = keras.metrics.MeanIoU(2, ignore_class=255)
    metric.update_state(read, predicted)
    assert float(metric.result()) == pytest.approx(0.5)  # what training monitors agrees


def test_the_profile_warns_where_a_person_would(tmp_path, compose_config):
    root = write_cells(tmp_path / "few", counts={"train": 28, "val": 8, "test": 8})
    data = folder(compose_config, root, "data.mask_values=[0,255]", "data.image_size=32")
    splits = split_samples(data, root, cache=False)
    report = profile(splits, ["background", "cell"], 32, 32, Intensity())
    train = report["splits"]["train"]
    assert train["kinds"] == {"16-bit grey": 28} and train["sizes"]["median"] == [32, 32]
    assert report["steps_per_epoch"] == 1
    warnings = "\n".join(report["warnings"])
    assert "train split: 28 images at trainer.batch_size=32 is 1 optimizer step per epoch" in warnings
    assert "valid: trainer.batch_size=2 (14 steps)" in warnings
    assert "data.intensity.mode=range data.intensity.range=[0," in warnings  # a 12-bit camera in 16 bits, auto
    ranged = Intensity("range", (0, 4095))
    assert not any("type's range" in w for w in profile(splits, ["background", "cell"], 2, 32, ranged)["warnings"])
    narrow = profile(splits, ["background", "cell"], 2, 32, Intensity("range", (0, 1500)))["warnings"]
    assert any("data.intensity (range 0..1500 -> 0..255) clips" in w for w in narrow), narrow
    percentile = profile(splits, ["background", "cell"], 2, 32, Intensity("percentile"))["warnings"]
    assert not any("clips" in w for w in percentile)  # clipping the tails is what a percentile mapping is
    missing = profile(splits, ["background", "cell", "mitosis"], 2, 32, ranged)  # a class no mask holds
    assert any(w.startswith("train split: no mitosis in 28 masks") for w in missing["warnings"]), missing["warnings"]
    with pytest.raises(DataError, match="data.strict=true and the data profile warns: train split: 28 images"):
        check_profile(splits, ["background", "cell"], 32, compose_config(["data.strict=true"]).data, ranged)


def test_served_mapping_makes_auto_explicit_for_deep_files():
    assert served_mapping(Intensity(), {"8-bit RGB": 10}) is None
    assert served_mapping(Intensity(), {"16-bit grey": 10}) == Intensity("range", (0.0, 65535.0))
    assert served_mapping(Intensity(), {"32-bit float grey": 3}) == Intensity("range", (0.0, 1.0))
    percentile = Intensity("percentile")
    assert served_mapping(percentile, {"8-bit RGB": 1}) is percentile
    assert json.loads(json.dumps(percentile.as_dict())) == {"mode": "percentile", "range": None,
                                                            "percentiles": [1.0, 99.8]}  # fmt: skip


COMMON = ["data=folder", "data.classes=[background,cell]", "data.image_size=32", "data.mask_values=[0,255]",
          "model.depth=2", "model.base_filters=8", "trainer.epochs=8", "trainer.batch_size=4",
          "tracking.num_examples=2"]  # fmt: skip


@pytest.fixture(scope="module")
def cells_runs(tmp_path_factory):
    """The cells set twice, trained alike: as 16-bit TIFFs (12-bit camera, offset ~1000) mapped by
    data.intensity range [0, 4095], and as the same values scaled by hand to 8-bit PNGs."""
    from helpers import train_run

    project = tmp_path_factory.mktemp("cells")
    deep, shallow = write_cells(project / "deep"), write_cells(project / "shallow", bits=8)
    mapping = ["data.intensity.mode=range", "data.intensity.range=[0,4095]"]
    client, deep_run = train_run(project / "a", f"data.root={deep}", *mapping, *COMMON)
    _, shallow_run = train_run(project / "b", f"data.root={shallow}", *COMMON)
    return project, client, deep_run, shallow_run


@pytest.mark.slow
def test_16_bit_tiffs_train_as_well_as_their_8_bit_copy_into_a_grey_model(cells_runs):
    project, client, deep, shallow = cells_runs
    a, b = deep.data.metrics["test_mean_iou"], shallow.data.metrics["test_mean_iou"]
    assert a >= 0.8 and abs(a - b) <= 0.03, (a, b)  # Pillow's clipping at 255 made this set all background
    import mlflow

    from pipeline import tracking

    mlflow.set_tracking_uri(f"sqlite:///{project / 'a'}/mlflow.db")
    terms = tracking.load_contract(deep.info.run_id, f"sqlite:///{project / 'a'}/mlflow.db")
    assert terms["input"]["shape"] == [None, 32, 32, 1]  # a 1-channel model
    assert deep.data.tags["input_channels"] == "1"
    profile_json = client.download_artifacts(deep.info.run_id, "data/profile.json", str(project))
    recorded = json.loads(open(profile_json).read())
    assert recorded["splits"]["train"]["kinds"] == {"16-bit grey": 48}
    assert recorded["intensity"] == "range 0..4095 -> 0..255"


@pytest.mark.slow
def test_predict_and_the_served_model_give_the_same_masks_from_raw_16_bit_files(cells_runs):
    import mlflow

    from helpers import run_here

    project, client, deep, _ = cells_runs
    raw = project / "deep" / "test" / "images"
    out = project / "predicted"
    result = run_here("predict", project / "a", f"source={deep.info.run_id}", f"input_dir={raw}",
                       f"output_dir={out}")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    files = sorted(raw.iterdir())
    from pipeline import tracking

    mlflow.set_tracking_uri(f"sqlite:///{project / 'a'}/mlflow.db")
    served = mlflow.pyfunc.load_model(tracking.run_model_uri(deep.info.run_id))
    import base64

    # the raw 16-bit TIFFs as a client has them: their bytes, and their values (0..4095) as arrays
    encoded = [base64.b64encode(f.read_bytes()).decode() for f in files]
    masks = np.stack([np.asarray(a["mask"]) for a in served.predict({"images": encoded})])
    values = [np.asarray(Image.open(f)).astype(np.float32) for f in files]
    assert np.array_equal(np.stack([np.asarray(a["mask"]) for a in served.predict({"images": values})]), masks)
    for path, mask in zip(files, masks):
        written = Image.open(out / "masks" / f"{path.stem}.png")
        assert written.mode == "P"  # a palette PNG: indices that viewers show in colour
        assert np.array_equal(np.asarray(written), mask), path.name
    truth = np.stack([np.asarray(Image.open(project / "deep" / "test" / "masks" / f"{f.stem}.png")) for f in files])
    truth = truth // 255
    assert (masks == truth).mean() > 0.9  # and they are right


@pytest.mark.slow
def test_a_plain_onnx_client_maps_raw_16_bit_files_from_the_file_s_metadata_alone(cells_runs, tmp_path):
    """Without the project: the ONNX file's contract says the files' 0..4095 map to 0..255 (and rounds), and
    a client doing only that predicts the masks cnn predict writes from the same raw TIFFs."""
    from helpers import assert_same_masks_up_to_near_ties, onnx_client, run_here

    project, client, deep, _ = cells_runs
    result = run_here("export", project / "a", f"source={deep.info.run_id}", "format=onnx", "num_images=8")
    assert result.returncode == 0, result.stderr[-3000:]
    model = project / "a" / "outputs" / "export" / deep.info.run_id / "onnx" / "model.onnx"
    raw = project / "deep" / "test" / "images"
    out = tmp_path / "predicted"
    result = run_here("predict", project / "a", f"source={deep.info.run_id}", f"input_dir={raw}",
                       f"output_dir={out}")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    files = sorted(raw.iterdir())
    output, classes, names = onnx_client(model, files, tmp_path / "client.npz")
    assert names == ["background", "cell"]
    # cnn predict runs the model in its trained precision (mixed bfloat16 where the CPU has it: ~2^-8 relative),
    # the export in float32: they may differ only where the top two classes are that close
    near = 1e-3 if deep.data.tags["precision"] == "float32" else 1e-2
    masks = [np.asarray(Image.open(out / "masks" / f"{path.stem}.png")) for path in files]
    assert_same_masks_up_to_near_ties(masks, classes, output, near, [path.name for path in files])
