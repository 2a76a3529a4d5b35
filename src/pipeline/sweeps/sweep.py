"""Hydra multiruns as one MLflow parent run with one child run per job, and the sweep's summary.

conf/config.yaml registers MlflowSweep under hydra.callbacks. At the start of a multirun (in the
launching process, before any job) it creates the store, the experiment and the parent run once, and
writes the parent's id into the sweep folder, where every job finds it: jobs of the basic launcher
(same process), of the joblib launcher (loky worker processes) or of a cluster launcher alike.
At the end it logs the summary to the parent: summary.csv / summary.md (each child's swept overrides
and headline metric, best first), metric_vs_params.png, and the tag best_run_id.

A sweep is its folder, so it resumes: the same command with `hydra.sweep.dir=<that folder>` reopens the
same parent run (a changed override is refused, naming the keys); a job whose child run FINISHED returns
its recorded metric without training; a job that was killed continues its own run from its last backed-up
epoch (trainer.resume) or starts afresh; children left RUNNING by a killed launcher are marked KILLED.
"""

import atexit
import json
import logging
import math
import sys
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from pipeline.config import one_line_errors
from pipeline.errors import PipelineError
from pipeline.evaluation import leaderboard

log = logging.getLogger(__name__)
PARENT_FILE = "mlflow_parent_run.json"


def parent_run_id() -> str | None:
    """In a multirun job, the sweep's parent run id; None for a single run (or with no MlflowSweep callback)."""
    record = _sweep_record()
    return record["run_id"] if record else None


def read_record(folder: Path) -> dict | None:
    """What MlflowSweep wrote in a sweep folder (parent run id, store, swept keys, overrides); None if nothing."""
    path = Path(folder) / PARENT_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def job_folder() -> Path | None:
    """In a multirun job, its sweep's folder; None otherwise (also outside Hydra: a notebook calling main)."""
    if not HydraConfig.initialized():
        return None
    hydra = HydraConfig.get()
    return Path(hydra.sweep.dir) if hydra.mode == RunMode.MULTIRUN else None


def _sweep_record() -> dict | None:
    """In a multirun job, its sweep's record; None otherwise."""
    folder = job_folder()
    return read_record(folder) if folder else None


def resuming() -> bool:
    """True in a job of a resumed sweep (started again on its folder)."""
    return bool((_sweep_record() or {}).get("resumes"))


def finished_job() -> float | None:
    """In a resumed sweep, the selection metric (validation) of this job's FINISHED child run (same overrides),
    or None."""
    from pipeline import tracking

    record = _sweep_record()
    if not record or not record.get("resumes"):
        return None
    mine = job_tags()["overrides"]
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


def swept(config: DictConfig) -> list[tuple[str, str]]:
    """(key as written, where) of everything a multirun varies: its sweeper's search space and the
    command-line overrides with several values (a,b), a range or a distribution."""
    params = OmegaConf.select(config, "hydra.sweeper.params")
    found = [(str(k), "hydra.sweeper.params") for k in (OmegaConf.to_container(params) if params else {})]
    for override in config.hydra.overrides.task:
        key, _, value = override.partition("=")
        if any(mark in value for mark in (",", "range(", "choice(", "interval(", "glob(")) and "[" not in value:
            found.append((key, "the command line"))
    return found


def swept_keys(config: DictConfig) -> list[str]:
    """The keys a multirun varies (see `swept`), without +/~."""
    return list(dict.fromkeys(key.lstrip("+~") for key, _ in swept(config)))


def check_swept_keys(config: DictConfig) -> None:
    """Every key a multirun varies (the sweeper's search space, the command line's a,b / choice / interval)
    must be a key of the config the jobs compose, else one ConfigError now, naming the option chosen and its
    keys, instead of Hydra's `Could not override` in every job after the parent run and study exist."""
    from pipeline.config.schema import ABSENT
    from pipeline.errors import ConfigError

    choices = config.hydra.runtime.choices
    for key, where in swept(config):
        if key.startswith(("+", "~")) or key.startswith("hydra.") or key in choices:
            continue  # an addition, a deletion, Hydra's own, or a config group (model=unet,segnet)
        if OmegaConf.select(config, key, default=ABSENT) is not ABSENT:
            continue
        group, _, rest = key.partition(".")
        node = OmegaConf.select(config, group, default=None)
        chosen = f"{group}={choices[group]}" if group in choices else group
        keys = ", ".join(map(str, node.keys())) if OmegaConf.is_dict(node) else "none"
        raise ConfigError(
            f"{where} sweeps {key}, which {chosen} does not have (its keys: {keys}); valid: sweep a key it has, "
            f"or add one with +{key}=..."
        )


def short(key: str) -> str:
    """optimizer.lr -> lr, model.base_filters -> base_filters: the last part names it well enough in a row."""
    return key.rsplit(".", 1)[-1]


def job_name() -> str | None:
    """In a multirun job, the run's name: what it varies, `lr=0.003 base_filters=8`; None otherwise."""
    record = _sweep_record()
    if record is None:
        return None
    swept, values = record.get("swept", []), leaderboard.parse_overrides(HydraConfig.get().overrides.task)
    named = [f"{short(key)}={leaderboard.short(values[key])}" for key in swept if key in values]
    return " ".join(named) or None


def job_tags() -> dict[str, str]:
    """The job's command-line overrides (a JSON list), which the summary and pipeline.commands.compare tabulate."""
    return {"overrides": json.dumps(list(HydraConfig.get().overrides.task))}


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


class MlflowSweep(Callback):
    """Parent MLflow run of a Hydra multirun (see the module docstring)."""

    def __init__(self) -> None:
        self.parent: tuple[str, str, Path] | None = None  # (tracking uri, run id, sweep folder)
        self.register: str | None = None  # sweep.register: the registered model the best child becomes

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        with one_line_errors("the sweep could not record itself (its MLflow parent run), so it"):
            self._start(config)

    def _start(self, config: DictConfig) -> None:
        check_swept_keys(config)  # before any parent run, study or data exists
        from pipeline import tracking  # imports Keras and MLflow: only when a multirun starts
        from pipeline.data.sources import prepare_data

        folder = Path(config.hydra.sweep.dir)
        if (folder / PARENT_FILE).is_file():
            self._resume(config, folder)
            return
        folder.mkdir(parents=True, exist_ok=True)
        try:  # the base config's data set once, so parallel jobs do not all generate it at the same time
            root = prepare_data(config.data, progress=False)
        except PipelineError as err:  # the jobs report it, each in its own run
            root = None
            log.warning("data not prepared up front: %s", err)
        uri = str(config.tracking.uri)
        experiment_id = tracking.prepare_store(uri, config.tracking.experiment, config.tracking.artifact_root)
        hydra = config.hydra
        tags = {
            "stage": "sweep",
            "sweeper": hydra.sweeper._target_.rsplit(".", 1)[-1],
            "launcher": hydra.launcher._target_.rsplit(".", 1)[-1],
            "sweep_dir": str(folder),
            "overrides": json.dumps(OmegaConf.to_container(hydra.overrides.task)),
        }
        params = OmegaConf.select(config, "hydra.sweeper.params")
        if params:
            tags["search_space"] = json.dumps(OmegaConf.to_container(params))
        swept = swept_keys(config)
        name = f"{tags['sweeper'].removesuffix('Sweeper').lower()}: {' x '.join(map(short, swept)) or 'sweep'}"
        run_id = tracking.start_parent_run(uri, experiment_id, f"{name} ({folder.parent.name} {folder.name})", tags)
        if root is not None:
            log_base_datasets(config, root, uri, run_id)
        overrides = list(hydra.overrides.task)
        record = {"run_id": run_id, "tracking_uri": uri, "swept": swept, "overrides": overrides, "resumes": 0}
        (folder / PARENT_FILE).write_text(json.dumps(record) + "\n")
        self._started(config, uri, run_id, folder)

    def _started(self, config: DictConfig, uri: str, run_id: str, folder: Path) -> None:
        self.parent = (uri, run_id, folder)
        self.register = OmegaConf.select(config, "sweep.register")
        # a failing job stops the multirun before on_multirun_end: end the parent (FAILED) at exit anyway
        atexit.register(self._finish, "FAILED")
        log.info("sweep parent run %s in %s", run_id, uri)

    def _resume(self, config: DictConfig, folder: Path) -> None:
        """The sweep in `folder` again: same parent run, same overrides (else refused in one line)."""
        from pipeline import tracking

        record = json.loads((folder / PARENT_FILE).read_text())
        uri, run_id = str(config.tracking.uri), record["run_id"]
        changed = changed_overrides(record.get("overrides", []), list(config.hydra.overrides.task))
        if record["tracking_uri"] != uri:
            changed.append(f"tracking.uri (was {record['tracking_uri']})")
        if changed:
            print(f"error: hydra.sweep.dir={folder} holds a sweep with other settings: {', '.join(changed)} "
                  "differ; resume with the same overrides, or give a new hydra.sweep.dir", file=sys.stderr)  # fmt: skip
            raise SystemExit(2)
        store = tracking.client(uri)
        for child in tracking.child_runs(uri, run_id):
            if child["status"] == "RUNNING":  # its launcher was killed: its job runs again below
                store.set_terminated(child["run_id"], "KILLED")
        store.update_run(run_id, status="RUNNING")
        record["resumes"] = record.get("resumes", 0) + 1
        (folder / PARENT_FILE).write_text(json.dumps(record) + "\n")
        store.set_tag(run_id, "resumes", str(record["resumes"]))
        log.info("resuming sweep %s (parent run %s): FINISHED jobs are not run again", folder, run_id)
        self._started(config, uri, run_id, folder)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        with one_line_errors("the sweep's summary"):
            self._finish("FINISHED")

    def _finish(self, status: str) -> None:
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


def log_base_datasets(config: DictConfig, root: Path, uri: str, run_id: str) -> None:
    """The base config's data splits as the parent run's dataset inputs, before any job starts. Besides the
    lineage, this inserts each dataset row once: parallel jobs of the same data then find it instead of all
    inserting it at once (which made one of them fail on the store's unique constraint)."""
    from pipeline import tracking
    from pipeline.data.shapes import read_manifest
    from pipeline.data.sources import split_samples

    try:
        checksum = (read_manifest(root) or {}).get("checksum")
        for split, samples in split_samples(config.data, root).items():
            tracking.log_dataset(config.data.name, str(root.resolve()), split, samples, checksum, run_id, uri)
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
