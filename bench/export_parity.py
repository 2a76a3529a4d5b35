"""The README's export table: for each of four model configs, a short real training run, then the export stage
in every format; prints parity_max_abs_diff (each runtime vs Keras on the run's test images), the float32 vs
trained-precision figure, the artefact's size and the stage's wall time.

    python bench/export_parity.py [--root /tmp/export-parity] [--epochs 3]
Every number comes from the MLflow runs the stages logged (a store in --root).
"""

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

RUNS = {  # label -> the train stage's overrides
    "unet (default)": ["experiment=shapes_unet"],
    "segnet": ["experiment=shapes_segnet"],
    "unet_paper (overlap-tile)": ["experiment=unet_paper"],
    "lenet5 (digits)": ["experiment=digits_lenet5"],
}
FORMATS = ("saved_model", "onnx", "litert")


def stage(name: str, root: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{root}/mlflow.db"}
    command = [sys.executable, "-m", f"pipeline.{name}", f"paths.root={root}", *overrides]
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode:
        sys.exit(f"{name} {' '.join(overrides)} failed:\n{done.stderr[-2000:]}")
    return done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("/tmp/export-parity"))
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    args.root.mkdir(parents=True, exist_ok=True)
    client = MlflowClient(f"sqlite:///{args.root}/mlflow.db")
    rows = ["| model | format | parity_max_abs_diff | float32 vs trained precision | artefact | export + check |",
            "|---|---|---|---|---|---|"]  # fmt: skip
    for label, overrides in RUNS.items():
        tag = label.split()[0]
        stage("train", args.root, *overrides, f"trainer.epochs={args.epochs}", "trainer.verbose=0",
              f"tracking.experiment=parity-{tag}")  # fmt: skip
        experiment = client.get_experiment_by_name(f"parity-{tag}").experiment_id
        [train] = client.search_runs([experiment], "tags.stage = 'train'", max_results=1)
        for fmt in FORMATS:
            start = time.perf_counter()
            stage("export", args.root, f"source={train.info.run_id}", f"format={fmt}", "num_images=64")
            seconds = time.perf_counter() - start
            [export] = client.search_runs(
                [experiment], f"tags.stage = 'export' and params.format = '{fmt}'", max_results=1
            )
            metrics = export.data.metrics
            folder = Path(export.info.artifact_uri.removeprefix("file://")) / "export" / fmt
            size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 2**20
            mixed = metrics.get("float32_vs_trained_max_abs_diff")
            rows.append(
                f"| {label} | {fmt} | {metrics['parity_max_abs_diff']:.2g} | "
                f"{'-' if mixed is None else f'{mixed:.2g}'} | {size:.2f} MiB | {seconds:.0f} s |"
            )
            print(rows[-1], flush=True)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
