"""The transfer study's summary: the table and plot of a strategy x k multirun, on that sweep's parent run.

    cnn transfer -m experiment=transfer_study       # the runs, nested under the sweep's parent run
    cnn transfer-study figure=docs/figures/transfer_study.png
Reads the runs of the newest sweep (or `sweep_dir`) through pipeline.tracking, averages each
strategy and k over seeds, and adds table.md, table.csv and plots/transfer_study.png to the sweep's own
parent run (beside its summary/ leaderboard), so one run holds the sweep, its children and its study.
With several `sweep_dir`, the last one's parent holds the study and lists them all. Returns the largest
test gain over scratch at k <= 20 of the reuse strategy chosen at each k by validation accuracy.
"""

import logging
from collections import defaultdict
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from pipeline.config import stage_main
from pipeline.errors import DataError
from pipeline.sweeps.sweep import PARENT_FILE, read_record

log = logging.getLogger(__name__)


def from_sweeps(runs: list[dict], sweeps: list[str]) -> list[dict]:
    """The runs of these sweeps; where several sweeps ran the same strategy and k, the last one listed
    wins (a rerun of some strategies with other settings replaces them)."""
    chosen = {}
    for sweep in sweeps:
        found = defaultdict(list)
        for run in runs:
            if run["tags"]["sweep_dir"] == sweep:
                found[run["tags"]["strategy"], run["tags"]["k_per_class"]].append(run)
        chosen.update(found)
    return [run for group in chosen.values() for run in group]


def summarise(runs: list[dict], metric: str = "test_accuracy") -> tuple[list[str], dict, dict[str, float]]:
    """k labels in increasing order ('all' last), {strategy: {k: `metric` over seeds}}, images per class of each k."""
    scores, per_class = defaultdict(lambda: defaultdict(list)), {}
    for run in runs:
        k, strategy = run["tags"]["k_per_class"], run["tags"]["strategy"]
        scores[strategy][k].append(run["metrics"].get(metric, float("nan")))
        classes = len(eval_list(run["params"]["data.classes"]))
        per_class[k] = run["metrics"]["train_images"] / classes
    ks = sorted(per_class, key=lambda k: per_class[k])
    from pipeline.config.options import TRANSFER_STRATEGIES as STRATEGIES

    return ks, {s: dict(scores[s]) for s in STRATEGIES if s in scores}, per_class


def eval_list(text: str) -> list:
    """A list param as MLflow stores it ('[0, 1]' or "['a', 'b']"), without eval."""
    return [item.strip().strip("'\"") for item in text.strip("[]").split(",") if item.strip()]


def chosen_reuse(validation: dict, k: str) -> str | None:
    """The reuse strategy (any but scratch) with the best mean validation accuracy at k: chosen without the
    test split."""
    means = {s: float(np.mean(v[k])) for s, v in validation.items() if s != "scratch" and k in v}
    return max(means, key=means.get) if means else None


def table(ks: list[str], scores: dict, per_class: dict, validation: dict) -> tuple[str, str]:
    """Markdown and CSV: mean +- std of target test accuracy per k (rows) and strategy (columns), and the test
    gain over scratch of the reuse strategy chosen by validation accuracy."""
    strategies = list(scores)
    header = ["k per class", "images per class", *strategies, "chosen reuse (by val) - scratch"]
    markdown = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    csv = ["k,images_per_class,strategy,mean,std,seeds"]
    for k in ks:
        cells, means = [k, f"{per_class[k]:.0f}"], {}
        for strategy in strategies:
            values = scores[strategy].get(k, [])
            if values:
                means[strategy] = float(np.mean(values))
                cells.append(f"{np.mean(values):.3f} ± {np.std(values):.3f}")
                csv.append(
                    f"{k},{per_class[k]:.0f},{strategy},{np.mean(values):.4f},{np.std(values):.4f},{len(values)}"
                )
            else:
                cells.append("–")
        chosen = chosen_reuse(validation, k)
        gain = chosen in means and "scratch" in means
        cells.append(f"{chosen} {means[chosen] - means['scratch']:+.3f}" if gain else "–")
        markdown.append("| " + " | ".join(cells) + " |")
    return "\n".join(markdown) + "\n", "\n".join(csv) + "\n"


def best_gain(ks: list[str], scores: dict, per_class: dict, validation: dict, max_k: float = 20) -> float:
    """The largest mean test gain over scratch at k <= max_k of the reuse strategy chosen at each k by
    validation accuracy (the test split measures the choice, it does not make it)."""
    gains = []
    for k in ks:
        chosen = chosen_reuse(validation, k)
        if per_class[k] <= max_k and k in scores.get("scratch", {}) and k in scores.get(chosen, {}):
            gains.append(np.mean(scores[chosen][k]) - np.mean(scores["scratch"][k]))
    return float(max(gains)) if gains else float("nan")


@stage_main("transfer_study")
def main(cfg: DictConfig) -> float:
    from pipeline import tracking
    from pipeline.plots import viz

    uri, experiment = cfg.tracking.uri, cfg.tracking.experiment
    runs = tracking.search_runs(uri, experiment, {"stage": "transfer"})
    runs = [r for r in runs if "sweep_dir" in r["tags"] and "test_accuracy" in r["metrics"]]
    if not runs:
        raise DataError(
            f"experiment '{experiment}' at {uri} has no finished transfer multirun; run "
            "cnn transfer -m experiment=transfer_study first"
        )
    sweeps = [runs[0]["tags"]["sweep_dir"]] if not cfg.sweep_dir else [str(Path(d).resolve()) for d in cfg.sweep_dir]
    runs = from_sweeps(runs, sweeps)
    if not runs:
        raise DataError(f"sweep_dir={cfg.sweep_dir}: no finished transfer runs of those sweeps in '{experiment}'")
    sweep = ",".join(sweeps)
    ks, scores, per_class = summarise(runs)
    validation = summarise(runs, "val_accuracy")[1]  # the last (kept) epoch's validation accuracy
    markdown, csv = table(ks, scores, per_class, validation)
    curves = {
        s: ([float(np.mean(v[k])) for k in ks], [float(np.std(v[k])) for k in ks])
        for s, v in scores.items()
        if all(k in v for k in ks)
    }
    labels = [f"{k}" if k != "all" else f"all ({per_class[k]:.0f})" for k in ks]
    tags = runs[0]["tags"]
    title = f"{tags['data']}: reusing {tags.get('source_run', tags['source'])[:12]}"
    figure = viz.accuracy_against_k([per_class[k] for k in ks], curves, labels, title)
    if cfg.figure:
        Path(cfg.figure).parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(cfg.figure, dpi=120)
    gain = best_gain(ks, scores, per_class, validation)
    record = read_record(Path(sweeps[-1]))
    if record is None:
        raise DataError(f"sweep_dir={sweeps[-1]} holds no {PARENT_FILE}: not a multirun's folder (or moved)")
    metrics = {"best_reuse_gain_k_le_20": gain, "transfer_study_runs": len(runs)}
    for strategy, values in scores.items():
        metrics.update({f"test_accuracy_{strategy}_k{k}": float(np.mean(values[k])) for k in ks if k in values})
    texts = {"table.md": markdown, "table.csv": csv}
    study_tags = {"transfer_study": "true", "transfer_study_sweeps": sweep}
    tracking.annotate_run(uri, record["run_id"], study_tags, metrics, texts, {"plots/transfer_study.png": figure})
    log.info("%d runs of %s\n%s", len(runs), sweep, markdown)
    log.info("the study is on the sweep's parent run %s: %s", record["run_id"],
             tracking.ui_link(uri, runs[0]["experiment_id"], record["run_id"]))  # fmt: skip
    return gain


if __name__ == "__main__":
    main()
