"""A multirun as one MLflow parent run with one child run per job, and the sweep's summary.

At the start of a multirun (in the launching process, before any job) `SweepParent.start` creates the store,
the experiment and the parent run once, and writes the parent's id into the sweep folder, where every job
finds it: jobs of the basic launcher (same process), of the joblib launcher (loky worker processes) or of a
cluster launcher alike. At the end `SweepParent.finish` logs the summary to the parent: summary.csv /
summary.md (each child's swept overrides and headline metric, best first), metric_vs_params.png, and the tag
best_run_id. Hydra calls these through its callback (pipeline.commands.hooks.MlflowSweep); a job finds its
place through a plain `JobPlace` (pipeline.config.spec), so nothing here sees Hydra's types.

A sweep is its folder, so it resumes: the same command with `hydra.sweep.dir=<that folder>` reopens the
same parent run (a changed override is refused, naming the keys); a job whose child run FINISHED returns
its recorded metric without training; a job that was killed continues its own run from its last backed-up
epoch (trainer.resume) or starts afresh; children left RUNNING by a killed launcher are marked KILLED.
"""

import atexit
import json
import logging
import math
from pathlib import Path

from pipeline.config.spec import JobPlace, Spec
from pipeline.errors import ConfigError, PipelineError
from pipeline.evaluation import leaderboard

log = logging.getLogger(__name__)
PARENT_FILE = "mlflow_parent_run.json"


def parent_run_id(place: JobPlace) -> str | None:
    """In a multirun job, the sweep's parent run id; None for a single run (or with no parent recorded)."""
    record = sweep_record(place)
    return record["run_id"] if record else None


def read_record(folder: Path) -> dict | None:
    """What SweepParent wrote in a sweep folder (parent run id, store, swept keys, overrides); None if nothing."""
    path = Path(folder) / PARENT_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def sweep_record(place: JobPlace) -> dict | None:
    """In a multirun job, its sweep's record; None otherwise."""
    return read_record(place.sweep_dir) if place.sweep_dir else None


def resuming(place: JobPlace) -> bool:
    """True in a job of a resumed sweep (started again on its folder)."""
    return bool((sweep_record(place) or {}).get("resumes"))


def finished_job(place: JobPlace) -> float | None:
    """In a resumed sweep, the selection metric (validation) of this job's FINISHED child run (same overrides),
    or None."""
    from pipeline import tracking

    record = sweep_record(place)
    if not record or not record.get("resumes"):
        return None
    mine = job_tags(place)["overrides"]
    for run in tracking.child_runs(record["tracking_uri"], record["run_id"]):
        if run["status"] == "FINISHED" and run["tags"].get("overrides") == mine:
            metric = run["tags"].get("selection_metric")
            log.info("already FINISHED in run %s (%s): not run again", run["run_id"], run["run_name"])
            return float(run["metrics"].get(metric, math.nan)) if metric else math.nan
    return None


def changed_overrides(before: list[str], now: list[str]) -> list[str]:
    """The keys whose command-line value differs between two override lists (added, removed or changed)."""
    old, new = (dict(o.split("=", 1) if "=" in o else (o, "") for o in given) for given in (before, now))
    return sorted(key for key in old.keys() | new.keys() if old.get(key) != new.get(key))


def latest_per_job(runs: list[dict]) -> list[dict]:
    """One child run per job (same overrides): the FINISHED one, else the newest; a resumed sweep's killed
    attempt stays in the store but not in the summary."""
    chosen: dict[str, dict] = {}
    for run in sorted(runs, key=lambda r: r["start_time"] or 0):
        key = run["tags"].get("overrides", run["run_id"])
        if key not in chosen or chosen[key]["status"] != "FINISHED":
            chosen[key] = run
    return list(chosen.values())


def short(key: str) -> str:
    """optimizer.lr -> lr, model.base_filters -> base_filters: the last part names it well enough in a row."""
    return key.rsplit(".", 1)[-1]


def job_name(place: JobPlace) -> str | None:
    """In a multirun job, the run's name: what it varies, `lr=0.003 base_filters=8`; None otherwise."""
    record = sweep_record(place)
    if record is None:
        return None
    swept, values = record.get("swept", []), leaderboard.parse_overrides(place.overrides)
    named = [f"{short(key)}={leaderboard.short(values[key])}" for key in swept if key in values]
    return " ".join(named) or None


def job_tags(place: JobPlace) -> dict[str, str]:
    """The job's command-line overrides (a JSON list), which the summary and pipeline.commands.compare tabulate."""
    return {"overrides": json.dumps(list(place.overrides))}


def write_summary(runs: list[dict], folder: Path) -> tuple[dict, list[Path]]:
    """summary.csv, summary.md and metric_vs_params.png of the child runs in `folder`, ranked by their
    selection metric (validation); returns the parent's tags and metrics (the best child, its validation
    score, and its test score as the held-out estimate) and the files written."""
    from pipeline.plots import viz

    chosen, _ = leaderboard.selection_metric(runs)  # none when every child failed before choosing an epoch
    table = leaderboard.leaderboard(runs, chosen or "selection_metric")
    metric = table.attrs["metric"]
    held_out = leaderboard.headline_metric(runs)
    files = [folder / "summary.csv", folder / "summary.md"]
    table.to_csv(files[0], index=False)
    files[1].write_text(to_markdown_with_title(table, metric, held_out))
    summary = {"tags": {"selection_metric": metric, "children": len(runs)}, "metrics": {}}
    if held_out:
        summary["tags"]["headline_metric"] = held_out
    scored = table[table[metric].notna()]
    swept = [c for c in table.columns if c not in (*leaderboard.FIXED_COLUMNS, metric, held_out)]
    if len(scored):
        best = scored.iloc[0]
        summary["tags"]["best_run_id"] = best["run_id"]
        summary["metrics"][f"best_{metric}"] = float(best[metric])
        if held_out and held_out in best and math.isfinite(best[held_out]):
            summary["metrics"][f"best_run_{held_out}"] = float(best[held_out])  # the chosen model's estimate
        if swept:
            values = {key: [str(v) for v in scored[key]] for key in swept}
            figure = viz.metric_against_params(values, list(scored[metric]), metric)
            files.append(folder / "metric_vs_params.png")
            figure.savefig(files[-1], dpi=100)
            viz.plt.close(figure)
    failed = int((~table["status"].isin(["FINISHED", "PRUNED"])).sum())
    if failed:
        summary["tags"]["unfinished_children"] = failed
    if pruned := int((table["status"] == "PRUNED").sum()):
        summary["tags"]["pruned_children"] = pruned
    return summary, files


def to_markdown_with_title(table, metric: str, held_out: str | None = None) -> str:
    beside = f"; {held_out} is each model's held-out test estimate, never ranked by" if held_out else ""
    order = "lowest" if table.attrs.get("mode") == "min" else "best"
    title = f"# Sweep summary: {len(table)} runs, {order} {metric} (validation) first{beside}"
    return f"{title}\n\n{leaderboard.to_markdown(table)}"


class SweepParent:
    """The parent MLflow run of a multirun, from its start to its summary (see the module docstring)."""

    def __init__(self) -> None:
        self.parent: tuple[str, str, Path] | None = None  # (tracking uri, run id, sweep folder)
        self.register: str | None = None  # sweep.register: the registered model the best child becomes

    def start(self, folder: Path, tracking_spec: Spec, data: Spec, tags: dict, swept: list[str],
              overrides: list[str], register: str | None = None) -> None:  # fmt: skip
        """Open the sweep in `folder`: a new parent run, or the same one again when the folder holds a sweep
        (a resume, refused in one ConfigError when `overrides` or the store differ). `tags` name the sweeper,
        launcher and search space; `swept` the keys the jobs vary, which name the parent and each child."""
        from pipeline import tracking  # imports Keras and MLflow: only when a multirun starts
        from pipeline.data.sources import prepare_data

        folder, uri = Path(folder), str(tracking_spec.uri)
        self.register = register
        if (folder / PARENT_FILE).is_file():
            self._resume(folder, uri, overrides)
            return
        folder.mkdir(parents=True, exist_ok=True)
        try:  # the base config's data set once, so parallel jobs do not all generate it at the same time
            root = prepare_data(data, progress=False)
        except PipelineError as err:  # the jobs report it, each in its own run
            root = None
            log.warning("data not prepared up front: %s", err)
        experiment_id = tracking.prepare_store(uri, tracking_spec.experiment, tracking_spec.artifact_root)
        tags = {"stage": "sweep", **tags, "sweep_dir": str(folder), "overrides": json.dumps(list(overrides))}
        sweeper = str(tags.get("sweeper", "sweep")).removesuffix("Sweeper").lower()
        name = f"{sweeper}: {' x '.join(map(short, swept)) or 'sweep'}"
        run_id = tracking.start_parent_run(uri, experiment_id, f"{name} ({folder.parent.name} {folder.name})", tags)
        if root is not None:
            log_base_datasets(data, root, uri, run_id)
        record = {"run_id": run_id, "tracking_uri": uri, "swept": swept, "overrides": list(overrides), "resumes": 0}
        (folder / PARENT_FILE).write_text(json.dumps(record) + "\n")
        self._started(uri, run_id, folder)

    def _started(self, uri: str, run_id: str, folder: Path) -> None:
        self.parent = (uri, run_id, folder)
        # a failing job stops the multirun before its end: end the parent (FAILED) at exit anyway
        atexit.register(self.finish, "FAILED")
        log.info("sweep parent run %s in %s", run_id, uri)

    def _resume(self, folder: Path, uri: str, overrides: list[str]) -> None:
        """The sweep in `folder` again: same parent run, same overrides (else refused in one line)."""
        from pipeline import tracking

        record = json.loads((folder / PARENT_FILE).read_text())
        run_id = record["run_id"]
        changed = changed_overrides(record.get("overrides", []), list(overrides))
        if record["tracking_uri"] != uri:
            changed.append(f"tracking.uri (was {record['tracking_uri']})")
        if changed:
            raise ConfigError(f"hydra.sweep.dir={folder} holds a sweep with other settings: {', '.join(changed)} "
                              "differ; resume with the same overrides, or give a new hydra.sweep.dir")  # fmt: skip
        store = tracking.client(uri)
        for child in tracking.child_runs(uri, run_id):
            if child["status"] == "RUNNING":  # its launcher was killed: its job runs again
                store.set_terminated(child["run_id"], "KILLED")
        store.update_run(run_id, status="RUNNING")
        record["resumes"] = record.get("resumes", 0) + 1
        (folder / PARENT_FILE).write_text(json.dumps(record) + "\n")
        store.set_tag(run_id, "resumes", str(record["resumes"]))
        log.info("resuming sweep %s (parent run %s): FINISHED jobs are not run again", folder, run_id)
        self._started(uri, run_id, folder)

    def finish(self, status: str) -> None:
        """End the parent run with `status`, its summary logged; the best child registered when asked."""
        if self.parent is None:
            return
        from pipeline import tracking

        uri, run_id, folder = self.parent
        self.parent = None
        runs = latest_per_job(tracking.child_runs(uri, run_id))
        summary, files = write_summary(runs, folder) if runs else ({"tags": {}, "metrics": {}}, [])
        tracking.finish_parent_run(uri, run_id, status, summary["tags"], summary["metrics"], files)
        best = summary["tags"].get("best_run_id")
        metric, held_out = summary["tags"].get("selection_metric"), summary["tags"].get("headline_metric")
        value = summary["metrics"].get(f"best_{metric}", math.nan)
        estimate = summary["metrics"].get(f"best_run_{held_out}", math.nan)
        log.info("sweep %s %s: %d runs, chosen run %s by %s %.4f; its held-out %s %.4f", run_id, status, len(runs),
                 best, metric, value, held_out, estimate)  # fmt: skip
        if files:
            log.info("summary: %s", files[1])
        if self.register and best and status == "FINISHED":
            register_best(uri, run_id, best, self.register)


def log_base_datasets(data: Spec, root: Path, uri: str, run_id: str) -> None:
    """The base config's data splits as the parent run's dataset inputs, before any job starts. Besides the
    lineage, this inserts each dataset row once: parallel jobs of the same data then find it instead of all
    inserting it at once (which made one of them fail on the store's unique constraint)."""
    from pipeline import tracking
    from pipeline.data.shapes import read_manifest
    from pipeline.data.sources import split_samples

    try:
        checksum = (read_manifest(root) or {}).get("checksum")
        for split, samples in split_samples(data, root).items():
            tracking.log_dataset(data.name, str(root.resolve()), split, samples, checksum, run_id, uri)
    except PipelineError as err:  # the jobs report it, each in its own run
        log.warning("sweep datasets not logged up front: %s", err)


def register_best(uri: str, parent_id: str, best_run: str, name: str, alias: str = "champion") -> None:
    """The sweep's best child's model as a new version of `name`, under `alias`; recorded on the parent run."""
    import mlflow

    from pipeline import tracking

    tracking.use_store(uri)
    try:
        version = tracking.register_model(best_run, name, alias, tags={"source_run": best_run, "sweep": parent_id})
    except (PipelineError, mlflow.exceptions.MlflowException) as err:
        log.error("sweep.register=%s: the best run %s was not registered: %s", name, best_run, err)
        return
    tracking.client(uri).set_tag(parent_id, "registered_model", f"models:/{name}/{version.version}")
    log.info("registered the best run %s as models:/%s@%s (version %s)", best_run, name, alias, version.version)
