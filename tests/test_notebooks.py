"""The notebooks in notebooks/: committed without outputs, and each one runs top to bottom without a cell error.

Executing them is behind the `notebooks` marker (`make test-notebooks`, a few minutes in all); each writes
its data and MLflow store under a temporary folder (PIPELINE_NOTEBOOK_ROOT), not into the checkout.
"""

import json
import shutil

import pytest

from pipeline.config import checkout
from pipeline.notebook import has_outputs, main, strip

NOTEBOOKS = sorted((checkout() / "notebooks").glob("*.ipynb"))
# the order the two test-notebooks workers get them in (2 each, then one at a time as they finish): the longest
# first, so neither worker is left with a long one at the end (measured two at a time, as CI runs them:
# 05 149 s, 04 101 s, 03 85 s, 06 56 s, 02 16 s, 01 12 s, 00 4 s)
RUN_ORDER = ["05_", "06_", "04_", "03_", "02_", "01_", "00_"]


def test_the_lecture_notebooks_are_there():
    assert [path.name[:3] for path in NOTEBOOKS] == ["00_", "01_", "02_", "03_", "04_", "05_", "06_"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_without_outputs(path):
    assert not has_outputs(path), f"{path.name} holds outputs: run `make strip-notebooks`"


def test_strip_removes_outputs_and_execution_counts(tmp_path, capsys):
    copy = tmp_path / NOTEBOOKS[0].name
    shutil.copy(NOTEBOOKS[0], copy)
    assert main(["check", str(copy)]) == 0
    notebook = json.loads(copy.read_text())
    code = next(cell for cell in notebook["cells"] if cell["cell_type"] == "code")
    code["execution_count"] = 3
    code["outputs"] = [{"output_type": "stream", "name": "stdout", "text": ["hello\n"]}]
    copy.write_text(json.dumps(notebook))
    assert has_outputs(copy)
    assert main(["check", str(copy)]) == 1
    assert "holds outputs" in capsys.readouterr().err
    assert strip(copy) and not has_outputs(copy)
    assert copy.read_text() == NOTEBOOKS[0].read_text()  # back to the committed bytes
    assert not strip(copy)


def run_order(path) -> int:
    return RUN_ORDER.index(path.name[:3]) if path.name[:3] in RUN_ORDER else len(RUN_ORDER)


@pytest.mark.notebooks
@pytest.mark.parametrize("path", sorted(NOTEBOOKS, key=run_order), ids=lambda p: p.stem)
def test_notebook_runs_without_error(path, tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("PIPELINE_NOTEBOOK_ROOT", str(tmp_path))  # the kernel inherits it
    notebook = nbformat.read(path, as_version=4)
    where = {"metadata": {"path": str(tmp_path)}}  # the kernel's working directory
    client = NotebookClient(notebook, timeout=600, kernel_name="python3", resources=where)
    client.execute()  # raises CellExecutionError, with the cell and its traceback, on the first failing cell
    errors = [o for cell in notebook.cells for o in cell.get("outputs", []) if o.output_type == "error"]
    assert not errors


def test_run_stage_reports_the_stage_error(tmp_path):
    from pipeline.errors import PipelineError
    from pipeline.notebook import run_stage

    with pytest.raises(PipelineError, match=r"cnn train model.base_filters=-4 failed:\n.*base_filters=-4 is invalid"):
        run_stage("train", tmp_path, "model.base_filters=-4")
    assert not (tmp_path / "mlflow.db").exists()  # it failed before any run was opened
