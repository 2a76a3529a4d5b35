"""Build every model config and train it one step with the pipeline's own loss/metric compilation.

Run as a script in a fresh process, since the Keras backend is fixed at import:
    KERAS_BACKEND=jax python tests/backend_smoke.py
Prints one `ok <model> <backend> loss=...` line per model config; exits non-zero on the first failure.
"""

import os
import sys

import keras
import numpy as np
from hydra import compose, initialize_config_dir

from pipeline.config import conf_dir, group_options
from pipeline.data.sequence import ImageBatches
from pipeline.models import build_model, task_of_model
from pipeline.tasks import get_task
from pipeline.training.fit import compile_model, model_options
from pipeline.training.runtime import build_optimizer

# the smallest data config of each task, at a size every model accepts
# one XLA compile of the whole step: eager JAX compiles every primitive on first use, twice as slow here
# (lenet5, vgg11, unet: 32 s jitted vs 61 s eager); SMOKE_JIT=0 runs them eagerly
JIT = os.environ.get("SMOKE_JIT", "1") == "1"
DATA_OF_TASK = {
    "segmentation": "shapes",
    "classification": "digits",
    "localization": "shapes_loc",
    "regression": "shapes_cover",
}


# model options whose layers differ from the config's defaults: unpooling switches, fixed stems, aux heads
VARIANTS = [
    "unet:model.upsampling=unpool",
    "unet:model.upsampling=bilinear",
    "unet:model.stem=sobel",
    "googlenet:model.aux_heads=true",
]
# model configs a variant trains whole, plus more: GoogLeNet with its auxiliary heads is the network and its heads
COVERED = {"googlenet"}


def choices() -> list[str]:
    """Every model config (those in COVERED through their variant) and every variant."""
    models = group_options("model")
    return [m for m in models if m not in COVERED] + VARIANTS


def one_step(variant: str) -> float:
    model_choice, *overrides = variant.split(":")
    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        cfg = compose("config", [f"model={model_choice}", *overrides])
        task = task_of_model(cfg.model.name)
        cfg = compose("config", [f"model={model_choice}", f"data={DATA_OF_TASK[task]}", *overrides])
    options = model_options(cfg.model)
    if task == "segmentation":  # the smallest U-Net/SegNet still pooling a few times
        options.update({k: v for k, v in {"depth": 2, "base_filters": 4}.items() if k in options})
    size, channels, classes = 32, cfg.data.get("channels", 3), len(cfg.data.classes)
    model = build_model(cfg.model.name, (size, size, channels), classes, **options)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (4, size, size, channels)).astype(np.float32)
    if task == "segmentation":
        y = rng.integers(0, classes, (4, size, size))
    elif task == "localization":
        y = np.tile(np.array([[0.2, 0.2, 0.6, 0.7]], np.float32), (4, 1))
    elif task == "regression":  # the fraction of the image each class covers
        y = rng.uniform(0, 0.3, (4, classes)).astype(np.float32)
    else:
        y = rng.integers(0, classes, 4)
    optimizer = build_optimizer("adam", 1e-3, steps_per_epoch=1, epochs=1)
    compile_model(model, get_task(task), {"ce": 1.0}, optimizer, classes, jit_compile=JIT)
    batches = ImageBatches(x, y, batch_size=4, outputs=len(model.outputs))
    loss = model.fit(batches, epochs=1, verbose=0).history["loss"][-1]
    if not np.isfinite(loss):
        raise RuntimeError(f"{variant}: loss {loss} after one step")
    return float(loss)


if __name__ == "__main__":
    for choice in sys.argv[1:] or choices():
        print(f"ok {choice} {keras.config.backend()} loss={one_step(choice):.4f}", flush=True)
