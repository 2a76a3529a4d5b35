"""The one package that talks to MLflow, in four parts: the store (one client per URI, retries), writing a
run, models (log and load), and queries (runs, metrics, sweeps' parent runs); with `provenance` (the code's
and machine's tags of every run).

The default store is a SQLite file under the project root (conf/tracking), so every Hydra job, single or
multirun, writes to the same place; MLFLOW_TRACKING_URI overrides it. May import config, data, deploy (the
served pyfunc a logged model carries) and models (custom layers to load).
"""

from pipeline.tracking.models import (
    inference_model,
    load_model,
    load_run_config,
    log_keras_model,
    register_model,
    registered_version,
    run_model_uri,
)
from pipeline.tracking.queries import (
    annotate_run,
    child_runs,
    download_artifact,
    experiment_ids,
    experiment_names,
    find_runs,
    finish_parent_run,
    get_run,
    last_run_metric,
    latest_run_id,
    metric_history,
    runs_table,
    search_runs,
    set_parent,
    start_parent_run,
)
from pipeline.tracking.runs import (
    MetricsCallback,
    Stopped,
    epoch_logs,
    flatten,
    log_artifact,
    log_dataset,
    log_dir,
    log_figure,
    log_metrics,
    log_params,
    log_text,
    metric_steps,
    run,
    set_tags,
    ui_link,
)
from pipeline.tracking.store import check_reachable, client, prepare_store, retry_locked, use_store

__all__ = [
    "MetricsCallback",
    "Stopped",
    "check_reachable",
    "child_runs",
    "client",
    "download_artifact",
    "epoch_logs",
    "experiment_ids",
    "experiment_names",
    "find_runs",
    "annotate_run",
    "finish_parent_run",
    "flatten",
    "get_run",
    "last_run_metric",
    "latest_run_id",
    "load_model",
    "load_run_config",
    "log_artifact",
    "log_dataset",
    "log_dir",
    "log_figure",
    "log_keras_model",
    "inference_model",
    "register_model",
    "registered_version",
    "run_model_uri",
    "log_metrics",
    "log_params",
    "log_text",
    "metric_history",
    "metric_steps",
    "prepare_store",
    "retry_locked",
    "run",
    "runs_table",
    "search_runs",
    "set_parent",
    "set_tags",
    "start_parent_run",
    "ui_link",
    "use_store",
]
