"""Sweeps end to end: a real joblib multirun into one SQLite store, a real `mlflow server`, the real UI.

One 2x2 grid sweep (4 parallel jobs, tiny U-Nets) feeds every test here; the server then serves that
same store, so the UI test compares the sweep's runs through it (a team's server on PostgreSQL:
tests/test_team_store.py).
"""

import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from helpers import mlflow_server, run_stage
from pipeline.config import checkout

pytestmark = pytest.mark.slow

SWEEP = [
    "sweep=grid",  # optimizer.lr: 3e-3,1e-2 x model.base_filters: 4,8
    "hydra/launcher=joblib",
    "hydra.launcher.n_jobs=2",
    "trainer=debug",
    "trainer.epochs=1",
    "model.depth=2",
    "tracking.num_examples=2",
    "sweep.register=shapes-best",  # the best child's model -> models:/shapes-best@champion
    "--multirun",  # after the overrides: run_stage puts paths.root first
]
SCREENSHOT = checkout() / "outputs" / "test-artifacts" / "mlflow-ui-compare.png"


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    project = tmp_path_factory.mktemp("sweep")
    result = run_stage("train", project, *SWEEP, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    uri = f"sqlite:///{project}/mlflow.db"
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("shapes").experiment_id
    runs = client.search_runs([experiment])
    parents = [r for r in runs if r.data.tags.get("stage") == "sweep"]
    children = [r for r in runs if r.data.tags.get("stage") == "train"]
    return SimpleNamespace(project=project, uri=uri, client=client, runs=runs, parents=parents, children=children)


def test_joblib_sweep_is_one_parent_run_with_a_finished_child_per_job(sweep):
    assert len(sweep.parents) == 1 and len(sweep.runs) == 5, [r.data.tags.get("stage") for r in sweep.runs]
    parent = sweep.parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["launcher"] == "JoblibLauncher"
    grid = set()
    for child in sweep.children:
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.info.status == "FINISHED"
        assert 0.0 <= child.data.metrics["test_mean_iou"] <= 1.0
        assert child.data.tags["headline_metric"] == "test_mean_iou"
        grid.add((child.data.params["optimizer.lr"], child.data.params["model.base_filters"]))
        # every epoch of every job arrived (nothing lost to SQLite's single writer)
        assert len(sweep.client.get_metric_history(child.info.run_id, "val_loss")) == 1
    assert grid == {("0.003", "4"), ("0.003", "8"), ("0.01", "4"), ("0.01", "8")}


def test_the_parent_inserts_the_datasets_once_before_the_jobs(sweep):
    """The root of the parallel-insert race: the sweep's parent logs the base data's splits before any job
    starts, so the jobs find those dataset rows instead of all inserting them at once."""
    [parent] = sweep.parents
    contexts = sorted(d.tags[0].value for d in sweep.client.get_run(parent.info.run_id).inputs.dataset_inputs)
    assert contexts == ["test", "train", "val"]
    digests = {d.dataset.digest for d in sweep.client.get_run(parent.info.run_id).inputs.dataset_inputs}
    for child in sweep.children:
        assert {d.dataset.digest for d in child.inputs.dataset_inputs} == digests


def test_runs_are_named_by_what_they_vary(sweep):
    [parent] = sweep.parents
    assert parent.info.run_name.startswith("basic: lr x base_filters ("), parent.info.run_name
    for child in sweep.children:
        overrides = dict(o.split("=", 1) for o in json.loads(child.data.tags["overrides"]))
        assert child.info.run_name == f"lr={overrides['optimizer.lr']} base_filters={overrides['model.base_filters']}"


def test_children_record_provenance_and_dataset_lineage(sweep):
    child = sweep.children[0]
    tags = child.data.tags
    assert len(tags["git.commit"]) == 40 and tags["git.dirty"] in ("true", "false")
    assert tags["system.backend"] == "tensorflow" and tags["system.keras"] and "CPU" in tags["system.devices"]
    manifest = json.loads((sweep.project / "data" / "shapes_debug" / "manifest.json").read_text())
    assert tags["data.checksum"] == manifest["checksum"]
    inputs = {d.dataset.name: d.dataset for d in child.inputs.dataset_inputs}
    assert set(inputs) == {"shapes-train", "shapes-val", "shapes-test"}
    assert manifest["checksum"].removeprefix("sha256:").startswith(inputs["shapes-train"].digest)
    assert json.loads(inputs["shapes-train"].profile)["features_shape"] == [16, 32, 32, 3]


def test_parent_holds_the_summary_and_the_best_child(sweep):
    parent = sweep.parents[0]
    artifacts = {a.path for a in sweep.client.list_artifacts(parent.info.run_id, "summary")}
    assert artifacts == {"summary/summary.csv", "summary/summary.md", "summary/metric_vs_params.png"}
    folder = sweep.client.download_artifacts(parent.info.run_id, "summary", str(sweep.project / "summary"))
    with open(Path(folder, "summary.csv")) as f:
        rows = list(csv.DictReader(f))
    scores = {c.info.run_id: c.data.metrics["selection_val_mean_iou"] for c in sweep.children}  # validation
    assert [r["run_id"] for r in rows] == sorted(scores, key=scores.get, reverse=True)
    assert {"optimizer.lr", "model.base_filters", "selection_val_mean_iou", "test_mean_iou"} <= set(rows[0])
    best = max(scores, key=scores.get)
    assert parent.data.tags["best_run_id"] == best and parent.data.tags["selection_metric"] == "selection_val_mean_iou"
    assert parent.data.metrics["best_selection_val_mean_iou"] == pytest.approx(max(scores.values()))
    held_out = sweep.client.get_run(best).data.metrics["test_mean_iou"]  # the chosen model's estimate, beside
    assert parent.data.metrics["best_run_test_mean_iou"] == pytest.approx(held_out)
    assert Path(folder, "metric_vs_params.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert Path(folder, "summary.md").read_text().count("| FINISHED |") == 4


def test_the_best_child_is_registered_as_champion_and_evaluates_to_its_metric(sweep):
    [parent] = sweep.parents
    best = parent.data.tags["best_run_id"]
    version = sweep.client.get_model_version_by_alias("shapes-best", "champion")
    assert version.run_id == best and parent.data.tags["registered_model"] == f"models:/shapes-best/{version.version}"
    result = run_stage("evaluate", sweep.project, "source=models:/shapes-best@champion")
    assert result.returncode == 0, result.stderr[-3000:]
    [evaluation] = sweep.client.search_runs(
        [sweep.client.get_experiment_by_name("shapes").experiment_id], "tags.stage = 'evaluate'"
    )
    expected = sweep.client.get_run(best).data.metrics["test_mean_iou"]
    assert abs(evaluation.data.metrics["test_mean_iou"] - expected) < 1e-6
    assert evaluation.data.tags["mlflow.parentRunId"] == best


def test_compare_prints_the_leaderboard_best_first(sweep):
    env = {**os.environ, "MLFLOW_TRACKING_URI": sweep.uri}
    shown = subprocess.run(
        [sys.executable, "-m", "pipeline.commands.compare"], env=env, capture_output=True, text=True, timeout=120
    )
    assert shown.returncode == 0, shown.stderr[-3000:]
    lines = shown.stdout.splitlines()
    assert lines[0].endswith(
        f"({sweep.parents[0].info.run_id}): 4 runs; ranked by selection_val_mean_iou, highest first"
    )
    header = ["run_id", "run_name", "status", "optimizer.lr", "model.base_filters", "selection_val_mean_iou"]
    assert lines[1].split() == [*header, "test_mean_iou"]
    metrics = [float(line.split()[-2]) for line in lines[2:6]]
    assert metrics == sorted(metrics, reverse=True) and len(metrics) == 4


# --- a team's tracking server ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(sweep):
    """`mlflow server` on a free loopback port over the sweep's store (the UI test reads the sweep through it)."""
    with mlflow_server(sweep.uri, sweep.project / "served-artifacts", sweep.project / "server.log") as url:
        yield url


# --- the MLflow UI in a real browser -------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Headless Debian Chromium driven by Selenium through Debian's chromedriver (no browser download)."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium (the dev extra) is not installed")
    paths = shutil.which("chromium"), shutil.which("chromedriver")
    if None in paths and shutil.which("apt-get") and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=300)
        install = ["apt-get", "install", "-y", "-qq", "chromium", "chromium-driver"]
        subprocess.run(install, env=env, capture_output=True, timeout=900)
        paths = shutil.which("chromium"), shutil.which("chromedriver")
    if None in paths:
        pytest.skip("Debian's chromium and chromium-driver are missing and could not be installed (needs root)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = paths[0]
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1600,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(paths[1]), options=options)
    driver.implicitly_wait(20)
    yield driver
    driver.quit()


# the compare view's metric table is a virtualized grid: names in the first grid, values (one column per
# run, in the order of the "Run ID:" row) in the second, rows matched by their vertical offset
GRID_ROWS = """
const section = [...document.querySelectorAll('.du-bois-light-collapse-item')].find(
  s => s.querySelector('.du-bois-light-collapse-header').textContent.trim() === arguments[0]);
const grids = [...section.querySelectorAll('.ReactVirtualized__Grid')];
grids.forEach(g => { g.scrollTop = arguments[1]; });
return grids.map(g => [...g.querySelectorAll('.ReactVirtualized__Grid__innerScrollContainer > div')]
  .map(c => [c.style.top, parseFloat(c.style.left), c.textContent.trim()]));
"""
TABLE_ROWS = """
return [...document.querySelectorAll('table.mlflow-compare-table tr')]
  .map(tr => [...tr.children].map(c => c.textContent.trim()));
"""


def metric_row(driver, name: str) -> list[str]:
    for offset in range(0, 5000, 180):  # scroll until the row is rendered
        for _ in range(3):  # the grid renders a new scroll position's rows a moment later (later on a busy host)
            names, values = driver.execute_script(GRID_ROWS, "Metrics", offset)[:2]
            tops = [top for top, _, text in names if text == name]
            if tops:
                driver.execute_script(GRID_ROWS, "Metrics", 0)  # back to the top, names and values aligned
                return [text for _, _, text in sorted(c for c in values if c[0] == tops[0])]
            time.sleep(0.3)
    raise AssertionError(f"metric {name} not in the compare view")


def test_mlflow_ui_compares_the_sweep_runs(server, sweep, browser, tmp_path):
    from selenium.webdriver.common.by import By

    parent = sweep.parents[0].info.run_id
    experiment = sweep.parents[0].info.experiment_id
    browser.implicitly_wait(120)  # the UI's first load on a busy 2-core machine can take a while
    browser.get(f"{server}/#/experiments/{experiment}/runs?workflowType=machine_learning")
    try:
        # the runs table shows the sweep as one parent row: expand it, tick each child, press Compare
        browser.find_element(By.CSS_SELECTOR, f"[role=row][row-id='{parent}'] button.du-bois-light-btn-link").click()
        browser.implicitly_wait(20)
        for child in sweep.children:
            row = f"[role=row][row-id='{child.info.run_id}']"
            browser.find_element(By.CSS_SELECTOR, f"{row} input[type=checkbox]").click()
        [compare] = [b for b in browser.find_elements(By.TAG_NAME, "button") if b.text.strip() == "Compare"]
        compare.click()
        browser.find_element(By.XPATH, "//*[contains(text(), 'Comparing 4 Runs')]")
        rows = {row[0]: row[1:] for row in browser.execute_script(TABLE_ROWS) if row}
        order = rows["Run ID:"]
        children = {c.info.run_id: c for c in sweep.children}
        assert sorted(order) == sorted(children)
        assert rows["optimizer.lr"] == [children[r].data.params["optimizer.lr"] for r in order]
        shown = [float(v) for v in metric_row(browser, "test_mean_iou")]
        assert shown == pytest.approx([children[r].data.metrics["test_mean_iou"] for r in order], abs=6e-4)
        metrics = browser.find_element(By.XPATH, "//div[@role='button' and normalize-space()='Metrics']")
        browser.execute_script("arguments[0].scrollIntoView()", metrics)  # the picture shows the metric table
    finally:  # the page as the test left it, passed or failed
        browser.save_screenshot(str(tmp_path / "mlflow-ui-compare.png"))
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp_path / "mlflow-ui-compare.png", SCREENSHOT)
    assert SCREENSHOT.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


PICK_COLUMN = """
const titles = [...document.querySelectorAll('.du-bois-light-tree-title')];
const title = titles.find(t => t.textContent.trim() === arguments[0]);
if (!title) return false;
title.closest('.du-bois-light-tree-treenode').querySelector('.du-bois-light-tree-checkbox').click();
return true;
"""
COLUMN = SCREENSHOT.with_name("mlflow-ui-metric-column.png")


def test_the_runs_table_shows_the_headline_metric_as_a_column(server, sweep, browser, tmp_path):
    """What README's "In the UI" says to do: Columns, search the metric, tick it, expand the sweep's row."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    parent = sweep.parents[0].info.run_id
    browser.implicitly_wait(120)
    browser.get(f"{server}/#/experiments/{sweep.parents[0].info.experiment_id}/runs?workflowType=machine_learning")
    try:
        row = browser.find_element(By.CSS_SELECTOR, f"[role=row][row-id='{parent}']")
        browser.implicitly_wait(2)
        for close in browser.find_elements(By.CSS_SELECTOR, "button[aria-label='Close']"):  # the assistant panel
            close.click()
        # the UI keeps its state per experiment (the compare test may have expanded the sweep's row already)
        if not browser.find_elements(By.CSS_SELECTOR, "[role=columnheader][col-id*='test_mean_iou']"):
            [columns] = [b for b in browser.find_elements(By.TAG_NAME, "button") if b.text.strip() == "Columns"]
            columns.click()
            browser.implicitly_wait(20)
            browser.find_element(By.CSS_SELECTOR, "input[placeholder='Search columns']").send_keys("test_mean_iou")
            assert browser.execute_script(PICK_COLUMN, "test_mean_iou")
            browser.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)
        browser.implicitly_wait(2)
        first_child = f"[role=row][row-id='{sweep.children[0].info.run_id}']"
        if not browser.find_elements(By.CSS_SELECTOR, first_child):
            row.find_element(By.CSS_SELECTOR, "button.du-bois-light-btn-link").click()  # the sweep's children
        browser.implicitly_wait(20)
        browser.find_element(By.CSS_SELECTOR, first_child)
        shown = {}
        for child in sweep.children:
            cell = browser.find_element(
                By.CSS_SELECTOR, f"[role=row][row-id='{child.info.run_id}'] [col-id*='test_mean_iou']"
            )
            shown[child.info.run_id] = float(cell.text)
        assert shown == pytest.approx({c.info.run_id: c.data.metrics["test_mean_iou"] for c in sweep.children})
    finally:
        browser.save_screenshot(str(tmp_path / COLUMN.name))
        COLUMN.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp_path / COLUMN.name, COLUMN)


def test_a_failing_job_ends_failed_and_so_does_its_sweep(tmp_path):
    # job 1 fails inside its run: its augmentation resizes the 64 px images to 32 px, which its model refuses
    overrides = ["trainer=debug", "trainer.epochs=1", "model.depth=2", "model.base_filters=4"]
    resize = "augment.train=[{name:Resize,height:32,width:32}]"
    result = run_stage("train", tmp_path, *overrides, "tracking.log_model=false", resize, "data.image_size=32,64", "-m")
    assert result.returncode == 1, result.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = {r.data.tags["stage"] + r.info.status: r for r in client.search_runs(["1"])}
    assert set(runs) == {"sweepFAILED", "trainFINISHED", "trainFAILED"}
    failed = runs["trainFAILED"]
    assert failed.data.tags["error"].startswith(
        "ValueError: Input 0 with name 'images' of layer 'unet' is incompatible"
    )
    assert "Traceback" in mlflow.artifacts.load_text(f"{failed.info.artifact_uri}/error/traceback.txt")
    parent = runs["sweepFAILED"]
    assert parent.data.tags["unfinished_children"] == "1"
    assert parent.data.tags["best_run_id"] == runs["trainFINISHED"].info.run_id
