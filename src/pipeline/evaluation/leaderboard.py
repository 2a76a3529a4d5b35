"""Leaderboards of runs: their key params and metrics, best first by the validation score each run was chosen
by (tag selection_metric), its test headline beside as the held-out estimate (the library behind
`cnn compare` and the sweep summary). The key params are the Hydra overrides that differ
between the runs (each run tags its overrides)."""

import collections
import json
import math

import pandas as pd

from pipeline.errors import DataError
from pipeline.tasks.base import direction

FIXED_COLUMNS = ["run_id", "run_name", "status"]


def parse_overrides(items) -> dict[str, str]:
    """Hydra command-line overrides (key=value, +key=value) as {key: value}."""
    return dict(item.lstrip("+~").split("=", 1) for item in items if "=" in item)


def overrides(run: dict) -> dict[str, str]:
    """The run's command-line overrides as {key: value} (tag `overrides`, a JSON list of key=value)."""
    return parse_overrides(json.loads(run["tags"].get("overrides", "[]")))


def headline_metric(runs: list[dict]) -> str | None:
    """The test metric the runs report as their held-out estimate (tag headline_metric), the most common one."""
    names = collections.Counter(r["tags"]["headline_metric"] for r in runs if "headline_metric" in r["tags"])
    return names.most_common(1)[0][0] if names else None


def selection_metric(runs: list[dict]) -> tuple[str | None, str]:
    """(metric, "max" | "min"): the validation score the runs were chosen by (tags selection_metric and
    selection_mode), the most common among the runs; (None, "max") when none records one."""
    named = collections.Counter(
        (r["tags"]["selection_metric"], r["tags"].get("selection_mode", "max"))
        for r in runs
        if "selection_metric" in r["tags"]
    )
    return named.most_common(1)[0][0] if named else (None, "max")


def swept_keys(runs: list[dict]) -> list[str]:
    """Override keys whose value differs between the runs (all of them when there is just one run)."""
    per_run = [overrides(r) for r in runs]
    keys = list(dict.fromkeys(k for o in per_run for k in o))
    if len(runs) < 2:
        return keys
    return [k for k in keys if len({o.get(k) for o in per_run}) > 1]


def leaderboard(runs: list[dict], metric: str | None = None, extra_metrics: tuple[str, ...] = ()) -> pd.DataFrame:
    """One row per run: id, name, status, the swept params, the metric ranked by, then the test headline
    (the held-out estimate) and `extra_metrics`; sorted by `metric` (default: the runs' selection metric, a
    validation score), best first in its direction, runs without it last."""
    chosen, mode = selection_metric(runs)
    if metric is None and chosen is None:
        raise DataError(
            f"none of these {len(runs)} runs records the validation score it is chosen by (tag selection_metric, "
            "set by the train and transfer stages); name a metric to sort by (compare --metric NAME)"
        )
    mode = mode if metric in (None, chosen) else direction(metric)
    metric = metric or chosen
    extra = tuple(dict.fromkeys(m for m in (headline_metric(runs), *extra_metrics) if m and m != metric))
    keys = swept_keys(runs)
    rows = []
    for run in runs:
        given = overrides(run)
        row = {column: run[column] for column in FIXED_COLUMNS}
        if run["tags"].get("pruned") == "true":  # ended KILLED by its Optuna study's pruner
            row["status"] = "PRUNED"
        # the resolved value where the override names a param (lr=1e-3 -> 0.001), else the override (model=vgg11)
        row.update({key: run["params"].get(key, given.get(key, "")) for key in keys})
        for name in (metric, *extra):
            row[name] = run["metrics"].get(name, math.nan)
        rows.append(row)
    table = pd.DataFrame(rows, columns=[*FIXED_COLUMNS, *keys, metric, *extra])
    table = table.sort_values(metric, ascending=mode == "min", na_position="last", kind="stable")
    table.attrs.update(metric=metric, mode=mode)  # what it is ranked by, for the summary and compare's title
    return table.reset_index(drop=True)


def short(value: str) -> str:
    """A sampled float param (0.00013927723945289018) as 0.0001393; anything else unchanged."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return value
    return f"{number:.4g}" if len(value) > 8 and math.isfinite(number) else value


def for_reading(table: pd.DataFrame) -> pd.DataFrame:
    """Params shortened for people (not run ids: a hex id can parse as a float); the CSV keeps them exact."""
    params = [c for c in table.columns if c not in FIXED_COLUMNS]
    return table.assign(**{c: table[c].map(lambda v: short(v) if isinstance(v, str) else v) for c in params})


def to_markdown(table: pd.DataFrame) -> str:
    """A GitHub Markdown table (pandas' to_markdown would need tabulate)."""

    def cell(value) -> str:
        if isinstance(value, float):
            return "" if math.isnan(value) else f"{value:.4f}"
        return str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in for_reading(table).itertuples(index=False)]
    return "\n".join(lines) + "\n"


def select_runs(uri: str, target: str | None) -> tuple[str, list[dict]]:
    """(title, runs) for a parent run id, an experiment name, or (None) the latest sweep."""
    from pipeline import tracking

    if target is None:
        sweeps = tracking.find_runs(uri, tracking.experiment_ids(uri), "tags.stage = 'sweep'", max_results=1)
        if not sweeps:
            raise DataError(f"no sweep in the store at {uri}; run `make sweep`, or name an experiment or run id")
        target = sweeps[0]["run_id"]
    parent = tracking.get_run(uri, target) if len(target) == 32 else None
    if parent is not None:
        runs = tracking.child_runs(uri, target)
        if not runs:
            raise DataError(f"run {target} has no child runs; name its experiment to compare it with others")
        return f"{parent['run_name']} ({target}): {len(runs)} runs", runs
    ids = tracking.experiment_ids(uri, target)
    if not ids:
        names = ", ".join(sorted(tracking.experiment_names(uri)))
        raise DataError(f"{target!r} is neither a run id nor an experiment in {uri}; experiments: {names}")
    runs = [r for r in tracking.find_runs(uri, ids) if r["tags"].get("stage") == "train"]
    return f"experiment {target}: {len(runs)} train runs", runs
