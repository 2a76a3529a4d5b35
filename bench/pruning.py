"""The README's pruning figures: the same 12-trial Optuna search (same seed, same sampler, same epochs) with and
without a pruner; wall time, trials pruned, epochs trained, the best validation score (what the study
maximises) and the chosen trial's test score (its held-out estimate), read from the studies and MLflow.

    python bench/pruning.py [--root /tmp/pruning] [--trials 12] [--epochs 6] [--pruner median]
"""

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

SEARCH = ["sweep=optuna", "hydra.sweeper.n_jobs=1", "model.depth=2", "data.splits.train=256",
          "data.splits.val=64", "data.splits.test=64", "data.image_size=32", "trainer.verbose=0",
          "tracking.log_model=false", "tracking.num_examples=1"]  # fmt: skip


def sweep(root: Path, name: str, trials: int, epochs: int, pruner: str | None) -> dict:
    import optuna

    folder = root / "outputs" / "multirun" / name
    args = [*SEARCH, f"hydra.sweeper.n_trials={trials}", f"trainer.epochs={epochs}", f"hydra.sweep.dir={folder}"]
    if pruner:
        args.append(f"hydra/sweeper/pruner={pruner}")
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{root}/mlflow.db"}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pipeline.commands.train", f"paths.root={root}", *args, "--multirun"],
                          env=env, capture_output=True, text=True)  # fmt: skip
    seconds = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"{name} failed:\n{done.stderr[-3000:]}")
    study = optuna.load_study(study_name=f"multirun/{name}", storage=f"sqlite:///{root}/optuna.db")
    pruned = [t for t in study.trials if t.state.name == "PRUNED"]
    epochs_run = sum(len(t.intermediate_values) for t in study.trials)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{root}/mlflow.db")
    parent = client.get_run(study.user_attrs["mlflow_parent_run_id"])
    test = parent.data.metrics.get("best_run_test_mean_iou", float("nan"))
    return {"name": name, "seconds": seconds, "best": study.best_value, "test": test, "pruned": len(pruned),
            "epochs": epochs_run, "trial": study.best_trial.number, "params": study.best_params}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("/tmp/pruning"))
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--pruner", default="median")
    args = parser.parse_args()
    args.root.mkdir(parents=True, exist_ok=True)
    rows = [sweep(args.root, "no-pruner", args.trials, args.epochs, None),
            sweep(args.root, args.pruner, args.trials, args.epochs, args.pruner)]  # fmt: skip
    print(f"| {args.trials}-trial search, {args.epochs} epochs each | wall time | epochs trained | trials pruned "
          "| best val_mean_iou (chosen by) | its test_mean_iou |\n|---|---|---|---|---|---|")  # fmt: skip
    for row in rows:
        print(f"| {row['name']} | {row['seconds']:.0f} s | {row['epochs']} | {row['pruned']} | {row['best']:.4f} "
              f"| {row['test']:.4f} |")  # fmt: skip
        print(f"  chosen: trial {row['trial']} {row['params']}")
    print(f"pruned / unpruned wall time: {rows[1]['seconds'] / rows[0]['seconds']:.2f}")


if __name__ == "__main__":
    main()
