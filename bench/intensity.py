"""The README's own-data figures: the generated cells set (pipeline.data.cells: a 12-bit camera's values in
16-bit TIFFs, background ~1000, 0/255 masks) trained alike under each way of reading it: Pillow's own 8-bit
conversion (what a pipeline that ignores bit depth gets: every value above 255 clipped), data.intensity
auto, range [0, 4095] and percentile, and the same values scaled by hand to 8-bit PNGs.

    python bench/intensity.py [--root /tmp/intensity] [--epochs 8]
"""

import argparse
import os
import subprocess
import sys
from pathlib import Path

from PIL import Image

COUNTS = {"train": 48, "val": 16, "test": 16}
COMMON = ["data=folder", "data.classes=[background,cell]", "data.image_size=32", "data.mask_values=[0,255]",
          "model.depth=2", "model.base_filters=8", "trainer.batch_size=4", "trainer.verbose=0",
          "tracking.num_examples=2", "tracking.log_model=false"]  # fmt: skip


def clipped_copy(deep: Path, out: Path) -> Path:
    """The 16-bit set as Pillow alone reads it (convert("L") clips every value above 255), saved as 8-bit."""
    for path in deep.rglob("*"):
        if path.is_file():
            target = out / path.relative_to(deep)
            target.parent.mkdir(parents=True, exist_ok=True)
            if path.suffix == ".tif":
                Image.open(path).convert("L").save(target.with_suffix(".png"))
            else:
                target.write_bytes(path.read_bytes())
    return out


def main() -> None:
    from mlflow.tracking import MlflowClient

    from pipeline.data.cells import write_cells

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("/tmp/intensity"))
    parser.add_argument("--epochs", type=int, default=8)
    args = parser.parse_args()
    deep = write_cells(args.root / "deep", COUNTS)
    deep_range = [f"data.root={deep}", "data.intensity.mode=range", "data.intensity.range=[0,4095]"]
    variants = {  # run name: (what the table says, overrides)
        "clipped": ("Pillow's 8-bit conversion (clips at 255)", [f"data.root={clipped_copy(deep, args.root / 'c')}"]),
        "auto": ("data.intensity auto (0..65535)", [f"data.root={deep}"]),
        "range": ("data.intensity range [0, 4095]", deep_range),
        "percentile": ("data.intensity percentile [1, 99.8]", [f"data.root={deep}", "data.intensity.mode=percentile"]),
        "by-hand": ("8-bit PNGs scaled by hand", [f"data.root={write_cells(args.root / 'shallow', COUNTS, bits=8)}"]),
    }
    uri = f"sqlite:///{args.root}/mlflow.db"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    print("| how the 16-bit cells are read | test mean IoU | val mean IoU (chosen by) |\n|---|---|---|")
    for name, (shown, overrides) in variants.items():
        command = [sys.executable, "-m", "pipeline.commands.train", f"paths.root={args.root}", *COMMON, *overrides,
                   f"trainer.epochs={args.epochs}", f"tracking.run_name={name}"]  # fmt: skip
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"{name} failed:\n{done.stderr[-3000:]}")
        client = MlflowClient(uri)
        [run] = client.search_runs([e.experiment_id for e in client.search_experiments()],
                                   f"tags.mlflow.runName = '{name}'", max_results=1)  # fmt: skip
        metrics = run.data.metrics
        print(f"| {shown} | {metrics['test_mean_iou']:.3f} | {metrics['selection_val_mean_iou']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
