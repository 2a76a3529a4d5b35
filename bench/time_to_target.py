"""Time to a target quality, as MLPerf Training measures it: each job trains until its validation metric reaches
the target (`trainer.stop_at`), several seeds, on each backend, with and without a recipe. The target is checked
on the validation split (model selection never sees the test split); the test score of the model kept at that
point is reported beside it.

    python bench/time_to_target.py                                  # both jobs, 5 seeds, TensorFlow and JAX
    python bench/time_to_target.py --jobs digits --backends jax --seeds 42 1
    python bench/time_to_target.py --smoke --root /tmp/ttt          # tiny data, target 0: the same steps
    python bench/time_to_target.py --root all --merge /tmp/tf /tmp/jax   # runs made apart, in one table

Each (job, recipe, backend, seed) is one `cnn train` in a fresh process, its epochs the job's cap. From its run:
`time_to_target_s` (the epochs' wall time to the target epoch; "not reached" within the cap), the epoch, the
test headline and the median img/s. Written under --root: runs.csv (one row per training), results.md (median
and spread per job, recipe and backend) and time_to_target.png (a box plot of the seconds).
"""

import argparse
import csv
import os
import statistics
import subprocess
import sys
from pathlib import Path

# job -> (its experiment, the experiment with the recipe that helps it, the validation metric and its target,
# the test metric reported). The target's metric is the run's monitor (trainer.stop_at watches the monitor):
# a tuned experiment that keeps its checkpoint by another metric is timed to the same target as the plain one.
JOBS = {
    "digits": ("digits_lenet5", "digits_lenet5_tuned", "val_accuracy", 0.98, "test_accuracy"),
    "unet": ("shapes_unet", "shapes_unet_tuned", "val_mean_iou", 0.90, "test_mean_iou"),
}
SMOKE = ("trainer=debug", "trainer.epochs=3", "tracking.log_model=false", "tracking.num_examples=1")
SMOKE_TARGETS = {"digits": 0.0, "unet": 0.0}  # reached by the first epoch: the steps, not the figures
# recipe -> overrides: "plain" is the job's experiment as configured, "tuned" its tuned experiment (conf/experiment)
RECIPES = {"plain": (), "tuned": (), "ema": ("optimizer.use_ema=true",)}


def train(root: Path, job: str, recipe: str, backend: str, seed: int, smoke: bool) -> dict:
    """One training to the target; its row (reached or not)."""
    from mlflow.tracking import MlflowClient

    plain, tuned, metric, target, test_key = JOBS[job]
    target = SMOKE_TARGETS[job] if smoke else target
    name = f"{job}-{recipe}-{backend}-{seed}"
    store = f"sqlite:///{root}/mlflow.db"
    experiment = tuned if recipe == "tuned" else plain
    args = [f"experiment={experiment}", *RECIPES[recipe], *(SMOKE if smoke else ()), f"seed={seed}",
            f"trainer.monitor={metric}", f"trainer.stop_at={target}", "trainer.verbose=0", f"tracking.run_name={name}",
            f"hydra.run.dir={root}/outputs/{name}"]  # fmt: skip
    env = {**os.environ, "KERAS_BACKEND": backend, "MLFLOW_TRACKING_URI": store}
    command = [sys.executable, "-m", "pipeline.commands.train", f"paths.root={root}", *args]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{name} failed:\n{done.stderr[-3000:]}")
    client = MlflowClient(store)
    [run] = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], f"tags.mlflow.runName = '{name}'", max_results=1
    )  # fmt: skip
    rates = [m.value for m in client.get_metric_history(run.info.run_id, "images_per_sec")][1:]  # after compiling
    reached = run.data.tags.get("target_reached") == "true"
    return {
        "job": job, "recipe": recipe, "backend": backend, "seed": seed, "target": target, "reached": reached,
        "seconds": run.data.metrics.get("time_to_target_s") if reached else None,
        "epochs": int(run.data.tags.get("stopped_at_epoch", 0)) if reached else None,
        "test": run.data.metrics.get(test_key), "test_metric": test_key,
        "images_per_sec": statistics.median(rates) if rates else None, "run_id": run.info.run_id,
    }  # fmt: skip


def spread(values: list[float], digits: int = 1) -> str:
    """median [min..max] of the values, or '-' when there are none."""
    if not values:
        return "-"
    return f"{statistics.median(values):.{digits}f} [{min(values):.{digits}f}..{max(values):.{digits}f}]"


def grouped(rows: list[dict]) -> dict[tuple, list[dict]]:
    """(job, recipe, backend) -> its rows, in the order they first appear: one table line, one box."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["job"], row["recipe"], row["backend"]), []).append(row)
    return groups


def table(rows: list[dict]) -> str:
    """One line per (job, recipe, backend): how many reached the target, the median [min..max] of the seconds
    and epochs to it (over the seeds that reached it), of the test score and of img/s (over all seeds)."""
    lines = ["| job (target) | recipe | backend | reached | seconds to target | epochs | test score | img/s |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for (job, recipe, backend), found in grouped(rows).items():
        hit = [row for row in found if row["reached"]]
        tests = [row["test"] for row in found if row["test"] is not None]
        rates = [row["images_per_sec"] for row in found if row["images_per_sec"] is not None]
        test_metric = found[0]["test_metric"].removeprefix("test_")
        lines.append(
            f"| {job} (val ≥ {found[0]['target']:g}) | {recipe} | {backend} | {len(hit)}/{len(found)} | "
            f"{spread([row['seconds'] for row in hit])} | {spread([float(row['epochs']) for row in hit])} | "
            f"{test_metric} {spread(tests, 4)} | {spread(rates, 0)} |"
        )
    return "\n".join(lines) + "\n"


def boxes(rows: list[dict]) -> dict[str, dict[str, list[float]]]:
    """job -> box label -> the seconds of the seeds that reached the target, in the rows' order. Every (recipe,
    backend) of a job gets its box, one where no seed reached it included (empty), and its label says how many did
    ("plain\njax\n4/5")."""
    panels: dict[str, dict[str, list[float]]] = {}
    for (job, recipe, backend), runs in grouped(rows).items():
        label = f"{recipe}\n{backend}\n{sum(r['reached'] for r in runs)}/{len(runs)}"
        panels.setdefault(job, {})[label] = [r["seconds"] for r in runs if r["reached"]]
    return panels


def box_plot(rows: list[dict], path: Path) -> None:
    """One panel per job, each on its own scale (the digits' seconds beside the U-Net's minutes would be flat),
    one box per recipe and backend over the seeds that reached the target; the label gives how many did."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = boxes(rows)
    widths = [max(2, len(groups)) for groups in panels.values()] or [2]
    figure, axes = plt.subplots(1, len(widths), figsize=(1.3 * sum(widths) + 1, 4.2), squeeze=False,
                                gridspec_kw={"width_ratios": widths})  # fmt: skip
    for axis, (job, groups) in zip(axes[0], panels.items()):
        target = next(row for row in rows if row["job"] == job)
        axis.boxplot([seconds or [float("nan")] for seconds in groups.values()], tick_labels=list(groups))
        for place, seconds in enumerate(groups.values(), start=1):  # every seed's time, beside its box
            axis.plot([place + 0.25] * len(seconds), seconds, "o", color="tab:blue", alpha=0.6, markersize=4)
        axis.set_title(f"{job}: {target['test_metric'].removeprefix('test_')} val ≥ {target['target']:g}")
        axis.set_ylabel("seconds to target (validation)")
        axis.set_ylim(bottom=0)
    figure.suptitle("Time to target: one box per recipe and backend, each seed that reached it a dot")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def read_rows(path: Path) -> list[dict]:
    """The rows of a runs.csv this script wrote, with their types back."""
    numbers = {"seed": int, "target": float, "seconds": float, "epochs": int, "test": float, "images_per_sec": float}
    rows = []
    for raw in csv.DictReader(open(path)):
        row = {key: (numbers[key](value) if value != "" else None) if key in numbers else value
               for key, value in raw.items()}  # fmt: skip
        rows.append({**row, "reached": raw["reached"] == "True"})
    return rows


def write(rows: list[dict], root: Path) -> None:
    """runs.csv, results.md and the box plot under root."""
    with open(root / "runs.csv", "w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (root / "results.md").write_text(table(rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("time-to-target"))
    parser.add_argument("--jobs", nargs="+", default=list(JOBS), choices=list(JOBS))
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--backends", nargs="+", default=["tensorflow", "jax"], choices=["tensorflow", "jax"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[42, 1, 2, 3, 4])
    parser.add_argument("--smoke", action="store_true", help="tiny data and a low target: the same steps, quickly")
    parser.add_argument("--merge", nargs="+", type=Path, metavar="ROOT",
                        help="train nothing: one table and box plot under --root of these roots' runs.csv")  # fmt: skip
    args = parser.parse_args()
    args.root.mkdir(parents=True, exist_ok=True)
    if args.merge:  # runs made apart (another backend, another host) in one table
        rows = [row for root in args.merge for row in read_rows(root / "runs.csv")]
        write(rows, args.root)
        box_plot(rows, args.root / "time_to_target.png")
        print(table(rows))
        return
    rows = []
    plan = [(j, r, b, s) for j in args.jobs for r in args.recipes for b in args.backends for s in args.seeds]
    for number, (job, recipe, backend, seed) in enumerate(plan, start=1):
        print(f"[{number}/{len(plan)}] {job} {recipe} {backend} seed {seed}", flush=True)
        rows.append(train(args.root.resolve(), job, recipe, backend, seed, args.smoke))
        write(rows, args.root)  # after every training: a cut run keeps them
    box_plot(rows, args.root / "time_to_target.png")
    print(table(rows))


if __name__ == "__main__":
    main()
