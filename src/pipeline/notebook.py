"""What the notebooks in notebooks/ share: compose a stage's config, run a stage as its command line
against a store of their own, read the runs back, show the pictures a run logged; and keep the
committed notebooks free of outputs.

    python -m pipeline.notebook check notebooks/*.ipynb   # exit 1 if any notebook holds outputs
    python -m pipeline.notebook strip notebooks/*.ipynb   # remove them (what `make strip-notebooks` runs)
"""

import json
import os
import subprocess
import sys
from pathlib import Path

from pipeline.config import checkout, compose, project_root
from pipeline.errors import PipelineError

__all__ = [
    "compose",
    "workspace",
    "tracking_uri",
    "run_stage",
    "runs",
    "metric_history",
    "show_artifact",
    "artifact_text",
    "has_outputs",
    "strip",
    "main",
]  # compose: pipeline.config's, for the notebooks


def workspace(name: str) -> Path:
    """A notebook's own project root (data/, outputs/, mlflow.db): $PIPELINE_NOTEBOOK_ROOT/<name> when set
    (the tests point it at a temporary folder), else outputs/notebooks/<name> in the checkout (git-ignored)."""
    base = os.environ.get("PIPELINE_NOTEBOOK_ROOT") or (checkout() or project_root()) / "outputs" / "notebooks"
    root = Path(base, name).resolve()
    root.mkdir(parents=True, exist_ok=True)
    return root


def tracking_uri(root: str | Path) -> str:
    """The SQLite MLflow store of a project root (the same place the stages use for paths.root=root)."""
    return f"sqlite:///{Path(root).resolve()}/mlflow.db"


def run_stage(stage: str, root: str | Path, *overrides: str, multirun: bool = False, timeout: int = 900) -> str:
    """Run `python -m pipeline.<stage> paths.root=<root> <overrides>` with root's store; returns its log.

    A separate process, exactly as on the command line: Hydra sets up its job (output folder, config
    choices, multirun sweep) and the notebook's own process stays free of the run's state.
    """
    command = [sys.executable, "-m", f"pipeline.commands.{stage}", *(["-m"] if multirun else []), f"paths.root={root}"]
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri(root), "HYDRA_FULL_ERROR": "0"}
    done = subprocess.run([*command, *overrides], env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode:  # the stage's one-line `error: ...` when it has one, else the end of its log
        errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
        raise PipelineError(f"cnn {stage} {' '.join(overrides)} failed:\n" + ("\n".join(errors) or done.stderr[-3000:]))
    return done.stdout + done.stderr


def runs(root: str | Path, experiment: str, stage: str | None = None):
    """The runs of an experiment in root's store, newest first, as a pandas DataFrame (params.*, metrics.*,
    tags.*); with `stage`, only that stage's runs (a multirun also records a parent run tagged stage=sweep)."""
    from pipeline import tracking

    table = tracking.runs_table(tracking_uri(root), experiment)
    if stage is not None and not table.empty:
        table = table[table["tags.stage"] == stage].reset_index(drop=True)
    return table


def metric_history(root: str | Path, run_id: str, key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of one metric of a run, in step order."""
    from pipeline import tracking

    return tracking.metric_history(tracking_uri(root), run_id, key)


def show_artifact(root: str | Path, run_id: str, path: str):
    """A PNG a run logged (e.g. plots/test_predictions.png), for a notebook to display."""
    from IPython.display import Image

    from pipeline import tracking

    return Image(filename=tracking.download_artifact(tracking_uri(root), run_id, path))


def artifact_text(root: str | Path, run_id: str, path: str) -> str:
    """A text artifact of a run (e.g. table.md)."""
    from pipeline import tracking

    return Path(tracking.download_artifact(tracking_uri(root), run_id, path)).read_text(encoding="utf-8")


def has_outputs(path: str | Path) -> bool:
    """True when any code cell of the notebook holds outputs or an execution count."""
    cells = json.loads(Path(path).read_text(encoding="utf-8"))["cells"]
    return any(c.get("outputs") or c.get("execution_count") is not None for c in cells if c["cell_type"] == "code")


def strip(path: str | Path) -> bool:
    """Remove outputs and execution counts (and kernel run metadata); True when the file changed."""
    path = Path(path)
    notebook = json.loads(path.read_text(encoding="utf-8"))
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
        for key in ("execution", "ExecuteTime", "collapsed", "scrolled"):
            cell.get("metadata", {}).pop(key, None)
    text = json.dumps(notebook, indent=1, ensure_ascii=False, sort_keys=True) + "\n"  # nbformat's own layout
    changed = text != path.read_text(encoding="utf-8")
    if changed:
        path.write_text(text, encoding="utf-8")
    return changed


def main(argv: list[str]) -> int:
    if len(argv) < 1 or argv[0] not in ("check", "strip"):
        print("usage: python -m pipeline.notebook check|strip NOTEBOOK...", file=sys.stderr)
        return 2
    if argv[0] == "strip":
        for path in argv[1:]:
            if strip(path):
                print(f"stripped {path}")
        return 0
    dirty = [path for path in argv[1:] if has_outputs(path)]
    for path in dirty:
        print(f"error: {path} holds outputs; run `make strip-notebooks` before committing", file=sys.stderr)
    return 1 if dirty else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
