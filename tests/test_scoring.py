"""Scoring a split batch by batch (pipeline.tasks.scoring): streamed from files it gives scikit-learn's scores
of the whole split at once, the same at any batch size; the pictures it keeps are the ones a sort of the whole
split picks; the headline's bootstrap interval agrees with the normal approximation of a proportion."""

import math

import keras
import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import accuracy_score, jaccard_score

from pipeline.data.folders import BadFiles
from pipeline.data.samples import FileSamples
from pipeline.errors import DataError
from pipeline.tasks import get_task
from pipeline.tasks.classification import ClassificationTally
from pipeline.tasks.scoring import TopK, evaluate, interval

CLASSES = ["background", "circle", "square"]
SIZE, COUNT = 16, 21


def _decode(path, mask_path):
    try:
        image = np.asarray(Image.open(path))
    except OSError:
        raise DataError(f"{path}: not an image") from None
    return image, np.asarray(Image.open(mask_path))


@pytest.fixture(scope="module")
def streamed(tmp_path_factory):
    """21 RGB 16x16 PNGs with random 3-class masks on disk, indexed as a streamed split; a small random
    per-pixel classifier."""
    folder = tmp_path_factory.mktemp("split")
    rng = np.random.default_rng(0)
    items = []
    for i in range(COUNT):
        image = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
        mask = rng.integers(0, 3, (SIZE, SIZE), dtype=np.uint8)
        Image.fromarray(image).save(folder / f"{i}.png")
        Image.fromarray(mask).save(folder / f"{i}_mask.png")
        items.append((folder / f"{i}.png", folder / f"{i}_mask.png"))
    keras.utils.set_random_seed(0)
    inputs = keras.Input((SIZE, SIZE, 3), name="images")
    model = keras.Model(inputs, keras.layers.Conv2D(3, 3, padding="same", activation="softmax")(inputs / 255.0))
    return FileSamples(items, _decode, (SIZE, SIZE, 3), "mask"), model


def test_streamed_segmentation_scores_are_sklearns_over_the_whole_split(streamed):
    samples, model = streamed
    report = evaluate(get_task("segmentation"), model, samples, CLASSES, batch_size=4, num_examples=2)
    images = np.stack([samples.read(i)[0] for i in range(COUNT)]).astype(np.float32)
    masks = np.stack([samples.read(i)[1] for i in range(COUNT)])
    predicted = model.predict(images, verbose=0).argmax(-1)
    assert report.scores["mean_iou"] == pytest.approx(jaccard_score(masks.ravel(), predicted.ravel(), average="macro"))
    assert report.scores["pixel_accuracy"] == pytest.approx(accuracy_score(masks.ravel(), predicted.ravel()))
    low, high = report.scores["mean_iou_ci_low"], report.scores["mean_iou_ci_high"]
    assert low < report.value < high
    assert set(report.figures) == {f"plots/{n}.png" for n in ("test_predictions", "confusion_matrix",
                                                              "worst_predictions", "best_predictions")}  # fmt: skip


def test_the_batch_size_changes_nothing(streamed):
    samples, model = streamed
    task = get_task("segmentation")
    one = evaluate(task, model, samples, CLASSES, batch_size=1, num_examples=0).scores
    many = evaluate(task, model, samples, CLASSES, batch_size=32, num_examples=0).scores
    assert one == pytest.approx(many, abs=1e-12)


def test_a_bad_file_is_named_or_skipped_as_the_data_asks(streamed, tmp_path):
    samples, model = streamed
    broken = tmp_path / "broken.png"
    broken.write_text("not a png")
    items = [*samples.items[:5], (broken, samples.items[0][1]), *samples.items[5:9]]
    split = FileSamples(items, _decode, (SIZE, SIZE, 3), "mask")
    task = get_task("segmentation")
    with pytest.raises(DataError, match="broken.png"):
        evaluate(task, model, split, CLASSES, batch_size=4, num_examples=0)
    bad = BadFiles("skip")
    skipped = evaluate(task, model, split, CLASSES, batch_size=4, num_examples=0, bad=bad).scores
    kept = evaluate(task, model, FileSamples(items[:5] + items[6:], _decode, (SIZE, SIZE, 3), "mask"), CLASSES,
                    batch_size=4, num_examples=0).scores  # fmt: skip
    assert skipped == pytest.approx(kept) and list(bad.skipped) == [str(broken)]


def test_a_model_of_another_size_is_one_line_before_anything_is_decoded(streamed):
    samples, _ = streamed
    inputs = keras.Input((32, 32, 3))
    other = keras.Model(inputs, keras.layers.Conv2D(3, 1, activation="softmax")(inputs))
    with pytest.raises(Exception, match=r"data.image_size gives \(16, 16, 3\) images but the model expects"):
        evaluate(get_task("segmentation"), other, samples, CLASSES)


def test_topk_keeps_what_a_sort_of_everything_picks():
    keys = np.random.default_rng(1).normal(size=500)
    kept = TopK(7)
    for i, key in enumerate(keys):
        kept.offer(key, i, np.array([i]))
    [indices] = kept.columns()
    assert indices.ravel().tolist() == np.argsort(-keys)[:7].tolist()


def test_bootstrap_interval_of_accuracy_is_the_normal_approximations():
    """2,000 images, 1,600 right: the 95 % percentile bootstrap of the accuracy is 0.8 ± 1.96·sqrt(0.8·0.2/2000)
    (the Wald interval, hand-worked: ±0.01753) to within its Monte Carlo error (~0.001 at 1,000 resamples)."""
    count, right = 2000, 1600
    labels = np.zeros(count, np.int64)
    probabilities = np.zeros((count, 2), np.float32)
    probabilities[:right, 0] = probabilities[right:, 1] = 1.0
    tally = ClassificationTally(["a", "b"], num_examples=0)
    tally.add(0, np.zeros((count, 1, 1, 1), np.uint8), labels, probabilities)
    low, high = interval(tally, count)
    half = 1.96 * math.sqrt(0.8 * 0.2 / count)
    assert low == pytest.approx(0.8 - half, abs=0.003) and high == pytest.approx(0.8 + half, abs=0.003)
    assert interval(tally, count) == (low, high)  # seeded: the same interval every time


def test_a_model_that_predicts_one_class_everywhere_is_a_warning_and_a_tag(streamed, tmp_path, caplog):
    """Its mean IoU is a constant prediction's (what a model whose batch norm statistics lag its weights scores in
    inference mode): the run says so in a warning and tags it; a model that predicts several classes does not."""
    import logging

    import mlflow
    from mlflow.tracking import MlflowClient

    from pipeline.training.fit import log_report

    samples, model = streamed
    inputs = keras.Input((SIZE, SIZE, 3), name="images")
    favour_background = keras.initializers.Constant([5.0, 0.0, 0.0])
    constant = keras.Model(inputs, keras.layers.Conv2D(3, 1, activation="softmax", kernel_initializer="zeros",
                                                       bias_initializer=favour_background)(inputs))  # fmt: skip
    segmentation, classification = get_task("segmentation"), get_task("classification")
    one = evaluate(segmentation, constant, samples, CLASSES, batch_size=8, num_examples=0)
    several = evaluate(segmentation, model, samples, CLASSES, batch_size=8, num_examples=2)
    assert one.predicted == ["background"] and several.predicted == CLASSES  # the random model's argmax varies
    labels = np.arange(12) % 3
    votes = keras.Model(inputs, keras.layers.Dense(3, activation="softmax", kernel_initializer="zeros",
                                                   bias_initializer=favour_background)(
                                                       keras.layers.GlobalAveragePooling2D()(inputs)))  # fmt: skip
    images = np.zeros((12, SIZE, SIZE, 3), np.float32)
    assert evaluate(classification, votes, (images, labels), CLASSES, batch_size=4, num_examples=2).predicted == [
        "background"
    ]
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    with caplog.at_level(logging.WARNING, logger="pipeline.training.fit"):
        with mlflow.start_run() as run:
            log_report(one)
        with mlflow.start_run() as control:
            log_report(several)
    assert client.get_run(run.info.run_id).data.tags["test_one_class"] == "background"
    assert "test_one_class" not in client.get_run(control.info.run_id).data.tags
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.startswith(f"test: the model predicts background everywhere in its {COUNT} images, so its "
                              f"mean_iou {one.value:.4f} is a constant prediction's")  # fmt: skip
