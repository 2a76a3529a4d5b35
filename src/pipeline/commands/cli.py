"""`cnn <command> [overrides]`: every stage behind one console command (pyproject's [project.scripts]).

    cnn train model=segnet                 same as python -m pipeline.commands.train model=segnet
    cnn predict source=<run id> input_dir=photos/
    cnn train --help | cnn train --cfg job
Only the chosen stage's entry module is imported, and it imports its library inside main, so --help and
--cfg answer before TensorFlow loads.
"""

import importlib
import sys

COMMANDS = {  # command -> (entry module, what it does)
    "train": ("pipeline.commands.train", "train a model (data -> fit -> test -> MLflow); -m for sweeps"),
    "prepare": ("pipeline.commands.prepare", "generate or check the data set"),
    "evaluate": ("pipeline.commands.evaluate", "score a run's model on a split, in a run nested under it"),
    "predict": ("pipeline.commands.predict", "apply a run's model to a folder of images"),
    "visualize": ("pipeline.commands.visualize", "filters, feature maps, saliency, Grad-CAM, occlusion, ..."),
    "analyze": ("pipeline.commands.analyze", "a model's conv arithmetic: shapes, parameters, receptive fields, FLOPs"),
    "transfer": ("pipeline.commands.transfer", "reuse a trained network on a small set"),
    "transfer-study": ("pipeline.commands.transfer_study", "summarise a transfer multirun"),
    "export": ("pipeline.commands.export", "a run's model as saved_model, onnx or litert, checked against Keras"),
    "card": ("pipeline.commands.card", "print a model's card: input, metrics with intervals, lineage, exports"),
    "register": ("pipeline.commands.register", "register a run's model as a version in the MLflow registry (+ alias)"),
    "compare": ("pipeline.commands.compare", "leaderboard of a sweep or an experiment"),
    "bench": ("pipeline.commands.bench", "the benchmark table"),
    "ui": ("pipeline.commands.ui", "the MLflow UI over the project's store, on http://127.0.0.1:5000"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    return "usage: cnn <command> [Hydra overrides | --help | --cfg job | -m ...]\n\ncommands:\n" + "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        valid = ", ".join(COMMANDS)
        print(f"error: cnn {command}: unknown command; valid: {valid} (cnn --help)", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[command][0])
    if command in ("compare", "ui"):  # argparse commands take their arguments directly
        module.main(rest)
        return 0
    sys.argv = [f"cnn {command}", *rest]  # Hydra and argparse read sys.argv
    module.main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
