"""`make bench`'s pieces: a measurement in its own process, and the table of ratios against targets."""

import csv
import json
import subprocess
import sys
from pathlib import Path

from pipeline.benchmarks.measures import RESULT
from pipeline.benchmarks.report import table


def test_a_measurement_runs_in_a_fresh_process_and_reports_json():
    command = [sys.executable, "-m", "pipeline.benchmarks.measures", "matmul_ceiling", json.dumps({"size": 64})]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    [line] = [line for line in done.stdout.splitlines() if line.startswith(RESULT)]
    ceiling = json.loads(line[len(RESULT) :])["flops_per_sec"]
    assert ceiling["float32"] > 1e6 and ceiling["bfloat16"] > 1e6


def test_the_bare_floor_trains_the_config_the_overrides_give(tmp_path):
    """`cnn bench --only stage <overrides>` compares the stage with a floor of the same config: the floor's batch
    size and loss are the overrides' (16 images at batch 8: two steps an epoch; cross-entropy + Lovász)."""
    overrides = ["trainer=debug", "model.depth=2", "model.base_filters=4", f"paths.data_dir={tmp_path}",
                 "loss=lovasz", "loss.ce=1"]  # fmt: skip
    kwargs = {"precision": "float32", "jit": False, "epochs": 2, "overrides": overrides}
    command = [sys.executable, "-m", "pipeline.benchmarks.measures", "bare_fit", json.dumps(kwargs)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    [line] = [line for line in done.stdout.splitlines() if line.startswith(RESULT)]
    found = json.loads(line[len(RESULT) :])
    assert found["steps_per_epoch"] == 2 and len(found["images_per_sec"]) == 1
    assert (found["loss"]["ce"], found["loss"]["lovasz"], found["loss"]["dice"]) == (1.0, 1.0, 0.0)


def test_bench_overrides_are_checked_before_anything_trains():
    cases = {
        ("--only", "stage", "trainer.batchsize=16"): "error: trainer.batchsize is not a key of trainer (in any "
        "conf/trainer option); did you mean trainer.batch_size?",
        ("--only", "stage", "loss=lovaz"): "error: loss=lovaz: conf/loss has no option 'lovaz'; did you mean "
        "loss=lovasz?",
        ("--only", "stage", "trainer.batch_size=0"): "error: trainer.batch_size=0 is invalid: must be a positive "
        "integer",
        ("trainer.batch_size=16",): "error: overrides (trainer.batch_size=16) apply to --only stage "
        "alone; valid: cnn bench --only stage trainer.batch_size=16",
    }
    for arguments, start in cases.items():
        done = subprocess.run([sys.executable, "-m", "pipeline.commands.bench", *arguments], capture_output=True,
                              text=True, timeout=120)  # fmt: skip
        assert done.returncode == 2 and done.stderr.startswith(start), (arguments, done.stderr[-1000:])
        assert done.stderr.count("\n") == 1, done.stderr  # one line, no usage or traceback


def test_table_reports_median_ratios_and_marks_the_targets():
    measured = {
        "rates": {
            "stage": [90, 96, 300],  # median 96
            "bare": [100, 100, 1],
            "fp32": [100],
            "input": [150, 150, 150],  # 1.5x the training step: below the 2x target
            "bf16": [120],
            "fp32+xla": [50],
        },
        "peaks": {"stage": [1500], "bare": [1000]},
        "train_flops_per_image": 1e9,
        "ceiling": {"float32": 1e12, "bfloat16": 2e12},
        "decode_images_per_sec": 5000,
        "workers": {1: [100, 110, 90], 2: [150]},  # 1.5x one worker on 2: efficiency 0.75
        "keras_workers": [120],
        "rss": {1000: 1600, 4000: 1900},  # 1.19x: over the 1.15 bound
        "stream128": [48],
        "bare128": [50],
        "config_errors": {"trainer.epoch=3": [0.4, 0.3, 0.5], "+trainer.epoch=3": [0.9, 1.0, 0.8]},
    }
    text = table(measured, repeats=3, epochs=3)
    assert "| train stage vs bare `model.fit` | 96 vs 100 img/s | 0.96 ✓ | ≥ 0.95 |" in text
    assert "| 1.50 ✗ | ≥ 2 |" in text
    assert "100.0 vs 1000.0 GFLOP/s | 0.10 |" in text
    assert "| mixed_bfloat16 vs float32 (256 images) | 120 vs 100 img/s | 1.20 | report |" in text
    assert "1500 vs 1000 MiB | 1.50 |" in text
    assert "streamed 256 px, 2 worker(s): scaling efficiency | 150 img/s (1.50x one worker) | 0.75 | report |" in text
    assert "2 workers: ours vs Keras PyDataset workers | 150 vs 120 img/s | 1.25 | report |" in text
    assert "| 1900 vs 1600 MiB | 1.19 ✗ | ≤ 1.15 |" in text  # a bound from above
    assert "| 48 vs 50 img/s | 0.96 ✓ | ≥ 0.95 |" in text
    assert "`trainer.epoch=3` 0.40 s, `+trainer.epoch=3` 0.90 s | 0.90 ✓ | ≤ 1.5 |" in text  # the slowest median


def test_the_gpu_table_gives_the_scaling_efficiency_of_all_devices_over_one():
    gpu = load_bench_script("gpu")
    results = {
        "256px unet train stage bf16 jit, 4 devices": {"images_per_sec": [3000, 3300, 100]},  # median 3000
        "256px unet train stage bf16 jit, 1 device": {"images_per_sec": [1000, 1000]},
    }
    text = gpu.table("gpu NVIDIA H100", results)
    # 3000 img/s on four devices against 1000 on one: x3.00, 75 % of linear
    assert "| 4 devices / 1 device, 256 px train stage (scaling efficiency: / 4) | 3.00 (75%) |" in text
    assert "| 256px unet train stage bf16 jit, 1 device | 1000 |" in text


def load_bench_script(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, Path(__file__).parents[1] / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_time_to_target_table_gives_median_and_range_over_the_seeds_that_reached_it():
    ttt = load_bench_script("time_to_target")
    row = {"job": "digits", "recipe": "plain", "backend": "jax", "target": 0.98, "test_metric": "test_accuracy"}
    rows = [
        {**row, "seed": 1, "reached": True, "seconds": 30.0, "epochs": 6, "test": 0.981, "images_per_sec": 900.0},
        {**row, "seed": 2, "reached": True, "seconds": 50.0, "epochs": 10, "test": 0.985, "images_per_sec": 1000.0},
        {**row, "seed": 3, "reached": False, "seconds": None, "epochs": None, "test": 0.97, "images_per_sec": 1100.0},
    ]
    [line] = [line for line in ttt.table(rows).splitlines() if line.startswith("| digits")]
    # the seconds and epochs of the two that reached it; the test score and img/s of all three
    assert line == ("| digits (val ≥ 0.98) | plain | jax | 2/3 | 40.0 [30.0..50.0] | 8.0 [6.0..10.0] | "
                    "accuracy 0.9810 [0.9700..0.9850] | 1000 [900..1100] |")  # fmt: skip


def test_the_time_to_target_plot_has_a_panel_per_job_and_a_box_per_row_even_one_never_reached():
    ttt = load_bench_script("time_to_target")
    rows = [
        {"job": "digits", "recipe": "plain", "backend": "jax", "reached": True, "seconds": 30.0},
        {"job": "unet", "recipe": "ema", "backend": "jax", "reached": False, "seconds": None},
        {"job": "digits", "recipe": "plain", "backend": "jax", "reached": False, "seconds": None},
        {"job": "digits", "recipe": "ema", "backend": "tensorflow", "reached": True, "seconds": 20.0},
        {"job": "digits", "recipe": "plain", "backend": "jax", "reached": True, "seconds": 50.0},
    ]
    assert ttt.boxes(rows) == {
        "digits": {"plain\njax\n2/3": [30.0, 50.0], "ema\ntensorflow\n1/1": [20.0]},
        "unet": {"ema\njax\n0/1": []},
    }


def test_the_docs_time_to_target_table_is_the_kept_runs_tabled_again():
    """docs/performance.md's table is what `--merge` makes of bench/results/*/runs.csv: a run kept without its row,
    or a row edited by hand, fails here."""
    ttt = load_bench_script("time_to_target")
    repo = Path(__file__).parents[1]
    kept = sorted((repo / "bench" / "results").glob("ttt*/runs.csv"))
    assert kept, "no kept time-to-target runs under bench/results"
    rows = [row for path in kept for row in ttt.read_rows(path)]
    docs = (repo / "docs" / "performance.md").read_text()
    missing = [line for line in ttt.table(rows).splitlines()[2:] if line not in docs]
    assert not missing, f"rows of the kept runs not in docs/performance.md: {missing}"


def test_the_time_to_target_script_trains_to_its_target_and_tables_it(tmp_path):
    script = Path(__file__).parents[1] / "bench" / "time_to_target.py"
    command = [sys.executable, str(script), "--smoke", "--root", str(tmp_path), "--jobs", "digits",
               "--recipes", "plain", "--backends", "tensorflow", "--seeds", "1"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = list(csv.DictReader(open(tmp_path / "runs.csv")))
    assert len(rows) == 1 and rows[0]["reached"] == "True" and rows[0]["epochs"] == "1"
    assert 0 < float(rows[0]["seconds"]) and (tmp_path / "time_to_target.png").stat().st_size > 0
    assert "| digits (val ≥ 0) | plain | tensorflow | 1/1 |" in (tmp_path / "results.md").read_text()
    merged = tmp_path / "merged"  # runs made apart, read back from their runs.csv into one table
    command = [sys.executable, str(script), "--root", str(merged), "--merge", str(tmp_path), str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    [line] = [line for line in (merged / "results.md").read_text().splitlines() if line.startswith("| digits")]
    seconds = f"{float(rows[0]['seconds']):.1f}"
    assert line.startswith(f"| digits (val ≥ 0) | plain | tensorflow | 2/2 | {seconds} [{seconds}..{seconds}] | 1.0 [")
    assert (merged / "time_to_target.png").stat().st_size > 0
