"""`make bench`: what the pipeline costs over hand-written Keras, and how fast it runs, side by side in one run.

    cnn bench                  # prints the table and writes bench/results.md
    cnn bench --repeats 3 --epochs 4
    cnn bench --only stage        # the first row alone: the train stage vs bare model.fit
    cnn bench --only evaluate_memory  # peak memory of cnn evaluate on 4,000 vs 1,000 streamed test images

Each measurement runs in a fresh Python process (its own TensorFlow runtime, its own peak memory), in
interleaved order and repeated, and the table reports medians and ratios: absolute speeds on a shared
machine are noisy, ratios measured together are not. Images/s are steady-state: the first epoch
(tracing, compilation) is dropped. The measurements live in pipeline.benchmarks.
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

from pipeline.config import project_root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3, help="per measurement; the first is dropped")
    parser.add_argument("--out", type=Path, default=project_root() / "bench" / "results.md")
    parser.add_argument("--only", choices=["config_errors", "stage", "evaluate_memory"],
                        help="measure one row alone and print it")  # fmt: skip
    args = parser.parse_args()
    from pipeline.benchmarks.report import config_error_row, evaluation_row, stage_row, table, table_row
    from pipeline.benchmarks.suite import config_errors, evaluation_memory, measure, stage_vs_bare

    if args.only == "stage":
        print(table_row(*stage_row(*stage_vs_bare(args.repeats, args.epochs))))
        return
    if args.only:
        with tempfile.TemporaryDirectory() as scratch:
            if args.only == "evaluate_memory":
                print(table_row(*evaluation_row(evaluation_memory(Path(scratch)))))
            else:
                print(table_row(*config_error_row(config_errors(Path(scratch), args.repeats))))
        return
    if args.epochs < 2 or args.repeats < 1:
        parser.error("--epochs must be >= 2 (the first epoch is dropped) and --repeats >= 1")
    start = time.perf_counter()
    found = measure(args.repeats, args.epochs)
    text = table(found, args.repeats, args.epochs) + f"\nTook {time.perf_counter() - start:.0f} s.\n"
    print("\n" + text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("# `make bench`\n\n" + text)
    args.out.with_suffix(".json").write_text(json.dumps(found, indent=1))


if __name__ == "__main__":
    main()
