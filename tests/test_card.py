"""The model card (pipeline.deploy.card) from hand-given run records: per-class scores found by class name,
the interval and the exports shown; `cnn card` on a file with nothing beside it is one line."""

import json

from helpers import run_here
from pipeline.deploy import card, contract

RUN = {
    "run_id": "abc123",
    "run_name": "unet",
    "status": "FINISHED",
    "start_time": 1_764_500_000_000,
    "tags": {
        "headline_metric": "test_accuracy",
        "selection_metric": "selection_val_accuracy",
        "selection_mode": "max",
        "git.commit": "0123abc",
        "task": "classification",
    },  # fmt: skip
    "params": {},
    "metrics": {
        "test_accuracy": 0.75,
        "test_accuracy_ci_low": 0.7,
        "test_accuracy_ci_high": 0.8,
        "test_images": 200,
        "test_precision_7": 0.25,
        "test_precision_17": 0.5,
        "test_recall_7": 1.0,
        "test_recall_17": 0.125,
        "selection_val_accuracy": 0.8,
        "selection_epoch": 3,
        "num_params": 1234,
    },  # fmt: skip
}


def test_per_class_scores_are_found_by_class_name_the_longer_name_first():
    found = card.per_class(RUN["metrics"], ["7", "17"])
    assert found == {"7": {"precision": 0.25, "recall": 1.0}, "17": {"precision": 0.5, "recall": 0.125}}


def test_the_card_shows_the_interval_the_classes_and_the_exports():
    terms = contract.describe((28, 28, 1), ["7", "17"], "classification", "probabilities", "per class")
    export = {"run_id": "e1", "status": "FAILED", "tags": {"format": "onnx"},
              "metrics": {"parity_max_abs_diff": 2e-6, "metric_delta": -0.004}}  # fmt: skip
    built = card.build(RUN, terms, {"model": {"name": "lenet5"}, "seed": 42}, None, [export])
    text = card.markdown(built)
    assert text.startswith("# Model card: lenet5 (classification)")
    interval = "(95 % bootstrap interval over test images: 0.7000..0.8000), 200 images"
    assert f"held-out test: test_accuracy = 0.7500 {interval}" in text
    assert "chosen by selection_val_accuracy (max) = 0.8000 at epoch 3" in text
    assert "| 17 | 0.5000 | 0.1250 |" in text and "| 7 | 0.2500 | 1.0000 |" in text
    assert "| onnx | `e1` | FAILED | 2.00e-06 | -0.0040 |" in text
    assert "code commit: 0123abc" in text
    assert json.loads(json.dumps(built)) == built  # plain JSON all the way down


def test_a_file_with_no_card_and_no_run_is_one_line(tmp_path):
    model = tmp_path / "best.keras"
    model.write_bytes(b"not really")
    (tmp_path / "notes.txt").write_text("")
    result = run_here("card", tmp_path, f"source={model}")
    assert result.returncode != 0
    [line] = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    assert "no model_card.json beside it" in line and "best.keras, notes.txt" in line
    assert "Traceback" not in result.stderr
