"""`make bench`: what the pipeline costs over hand-written Keras, and how fast it runs, side by side in one run.

    cnn bench                  # prints the table and writes bench/results.md
    cnn bench --repeats 3 --epochs 4
    cnn bench --only stage        # the first row alone: the train stage vs bare model.fit
    cnn bench --only stage trainer.batch_size=16 loss=lovasz  # that row for another config (Hydra overrides)
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
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="with --only stage: Hydra overrides the stage and its floor both train with")  # fmt: skip
    args = parser.parse_args()
    if args.overrides and args.only != "stage":
        parser.exit(2, f"error: overrides ({' '.join(args.overrides)}) apply to --only stage alone; valid: cnn "
                       f"bench --only stage {' '.join(args.overrides)}\n")  # fmt: skip
    if args.overrides:
        problem = config_problem(args.overrides)
        if problem:
            parser.exit(2, f"error: {problem}\n")
    from pipeline.benchmarks.report import config_error_row, evaluation_row, stage_row, table, table_row
    from pipeline.benchmarks.suite import config_errors, evaluation_memory, measure, stage_vs_bare

    if args.only == "stage":
        print(table_row(*stage_row(*stage_vs_bare(args.repeats, args.epochs, tuple(args.overrides)))))
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


def config_problem(overrides: list[str]) -> str | None:
    """What is wrong with the overrides, in one line (a misspelt option or key, a value the schema refuses, an
    override Hydra cannot read), before any measurement starts; None when the config composes and checks."""
    from pipeline.config import argument_problem, compose
    from pipeline.config.schema import check_schema
    from pipeline.errors import PipelineError

    found = argument_problem(overrides)
    if found:
        return found
    try:
        check_schema(compose(overrides))
    except PipelineError as err:
        return str(err)
    except Exception as err:  # Hydra's own: an override it cannot parse or apply
        return f"{' '.join(overrides)}: {str(err).strip().splitlines()[0]}"
    return None


if __name__ == "__main__":
    main()
