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


def stage(name: str, root: Path, *overrides: str, parity: bool = False) -> subprocess.CompletedProcess:
    """Run a stage; an export beyond its tolerance (exit 2, its run FAILED with the figures) is a result too."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{root}/mlflow.db"}
    command = [sys.executable, "-m", f"pipeline.{name}", f"paths.root={root}", *overrides]
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode and not (parity and "beyond tolerance" in done.stderr):
        sys.exit(f"{name} {' '.join(overrides)} failed:\n{done.stderr[-2000:]}")
    return done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("/tmp/export-parity"))
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    args.root.mkdir(parents=True, exist_ok=True)
    client = MlflowClient(f"sqlite:///{args.root}/mlflow.db")
    rows = ["| model | format | parity_max_abs_diff | values > 1e-4 | same class | float32 vs trained (bf16) "
            "| artefact | export + check |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for label, overrides in RUNS.items():
        tag = label.split()[0]
        found = client.get_experiment_by_name(f"parity-{tag}")
        trained = found and client.search_runs([found.experiment_id], "tags.stage = 'train' and status = 'FINISHED'")
        if not trained:  # a run of this root trained before is reused: the exports are what is measured
            stage("train", args.root, *overrides, f"trainer.epochs={args.epochs}", "trainer.verbose=0",
                  f"tracking.experiment=parity-{tag}")  # fmt: skip
        experiment = client.get_experiment_by_name(f"parity-{tag}").experiment_id
        [train] = client.search_runs([experiment], "tags.stage = 'train' and status = 'FINISHED'", max_results=1)
        for fmt in FORMATS:
            start = time.perf_counter()
            stage("export", args.root, f"source={train.info.run_id}", f"format={fmt}", "num_images=64", parity=True)
            seconds = time.perf_counter() - start
            [export] = client.search_runs(
                [experiment], f"tags.stage = 'export' and params.format = '{fmt}'", max_results=1,
                run_view_type=3,  # every status: a FAILED export holds its figures too
            )  # fmt: skip
            metrics = export.data.metrics
            folder = Path(export.info.artifact_uri.removeprefix("file://")) / "export" / fmt
            size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 2**20
            mixed = metrics.get("float32_vs_trained_max_abs_diff")
            agree = metrics.get("parity_class_agreement")
            over = int(metrics["parity_values_over_tolerance"])
            status = "" if export.info.status == "FINISHED" else f" ({export.info.status})"
            rows.append(
                f"| {label} | {fmt} | {metrics['parity_max_abs_diff']:.2g}{status} | {over} | "
                f"{'-' if agree is None else f'{agree:.2%}'} | {'-' if mixed is None else f'{mixed:.2g}'} | "
                f"{size:.2f} MiB | {seconds:.0f} s |"
            )
            print(rows[-1], flush=True)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
