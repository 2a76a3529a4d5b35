"""Leaderboard of runs: their key params and metrics, best validation score first.

    cnn compare                       # the children of the latest sweep
    cnn compare <parent run id>       # the children of that sweep (or runs nested under a run)
    cnn compare shapes                # every train run of experiment `shapes`
    cnn compare shapes --metric val_loss --uri http://127.0.0.1:5000
Runs are ranked by the validation score each was chosen by (selection_<monitor>); the test headline stands
beside it as the held-out estimate. The key params are the Hydra overrides that differ between the runs
(each run tags its overrides); the store is the project's (tracking.uri: MLFLOW_TRACKING_URI, else
./mlflow.db) unless --uri says otherwise.
"""

import argparse


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="cnn compare", description=__doc__.split("\n")[0])
    parser.add_argument("target", nargs="?", help="parent run id or experiment name (default: the latest sweep)")
    parser.add_argument("--uri", help="tracking URI (default: the config's tracking.uri)")
    parser.add_argument("--metric", help="sort by this metric (default: the validation score each run was chosen by)")
    parser.add_argument("--limit", type=int, default=50, help="rows to print (default 50)")
    args = parser.parse_args(argv)
    import pandas as pd

    from pipeline.config import default_tracking_uri, one_line_errors
    from pipeline.evaluation.leaderboard import for_reading, leaderboard, select_runs

    uri = args.uri or default_tracking_uri()
    with one_line_errors():
        title, runs = select_runs(uri, args.target)
        table = leaderboard(runs, args.metric)
    order = "lowest" if table.attrs["mode"] == "min" else "highest"
    print(f"{title}; ranked by {table.attrs['metric']}, {order} first")
    if table.attrs["metric"].startswith("test_"):
        print("note: ranked by a test metric, for reading only: choosing a model by it makes its test score optimistic")
    with pd.option_context("display.width", 200, "display.max_columns", 30, "display.max_colwidth", 40):
        print(for_reading(table.head(args.limit)).to_string(index=False, float_format=lambda v: f"{v:.4f}"))


if __name__ == "__main__":
    main()
