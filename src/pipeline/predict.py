"""Predict stage: segment a folder of images of any size and write one mask PNG (class indices) and one
overlay per image.

    python -m pipeline.predict source=<run id | .keras | models:/...> input_dir=photos/ [mode=tile]
mode=resize scales each image to the model's input size and the probabilities back; mode=tile slides
the model over the full-resolution image in overlapping tiles and averages them.
"""

import logging
import math
from pathlib import Path

import hydra
import keras
import numpy as np
from omegaconf import DictConfig
from PIL import Image
from tqdm import tqdm

from pipeline import tracking, viz
from pipeline.config import conf_dir, stage
from pipeline.data.folders import IMAGE_SUFFIXES, open_image
from pipeline.errors import ConfigError, DataError
from pipeline.segmentation import predict_probabilities

log = logging.getLogger(__name__)
MODES = ("resize", "tile")


def predict_resized(model: keras.Model, image: np.ndarray, tta: bool = False) -> np.ndarray:
    """Probabilities (H, W, C) for an image of any size via the model's own input size."""
    height, width = model.inputs[0].shape[1:3]
    small = np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))
    probabilities = predict_probabilities(model, small[None], tta=tta)
    resized = keras.ops.image.resize(probabilities, image.shape[:2], interpolation="bilinear")
    return keras.ops.convert_to_numpy(resized)[0]


def predict_tiled(model: keras.Model, image: np.ndarray, overlap: float = 0.5, tta: bool = False) -> np.ndarray:
    """Probabilities (H, W, C) from overlapping model-sized tiles over a mirror-padded image, averaged."""
    tile_h, tile_w = model.inputs[0].shape[1:3]
    step_h, step_w = max(1, int(tile_h * (1 - overlap))), max(1, int(tile_w * (1 - overlap)))
    height, width = image.shape[:2]
    rows = max(1, math.ceil((height - tile_h) / step_h) + 1)
    cols = max(1, math.ceil((width - tile_w) / step_w) + 1)
    pad_h, pad_w = (rows - 1) * step_h + tile_h - height, (cols - 1) * step_w + tile_w - width
    mode = "reflect" if pad_h < height and pad_w < width else "symmetric"
    padded = np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)), mode=mode)
    tiles = np.stack(
        [
            padded[r * step_h : r * step_h + tile_h, c * step_w : c * step_w + tile_w]
            for r in range(rows)
            for c in range(cols)
        ]
    )
    probabilities = predict_probabilities(model, tiles, tta=tta)
    total = np.zeros((*padded.shape[:2], probabilities.shape[-1]), np.float32)
    counts = np.zeros(padded.shape[:2] + (1,), np.float32)
    for k, tile in enumerate(probabilities):
        r, c = divmod(k, cols)
        total[r * step_h : r * step_h + tile_h, c * step_w : c * step_w + tile_w] += tile
        counts[r * step_h : r * step_h + tile_h, c * step_w : c * step_w + tile_w] += 1
    return (total / counts)[:height, :width]


def overlay(image: np.ndarray, labels: np.ndarray, num_classes: int, alpha: float = 0.5) -> np.ndarray:
    """The image with each non-background class painted in its colour."""
    colours = (np.array([viz.class_colormap(num_classes)(i)[:3] for i in range(num_classes)]) * 255).astype(np.float32)
    painted = np.where(labels[..., None] > 0, (1 - alpha) * image + alpha * colours[labels], image)
    return painted.astype(np.uint8)


@hydra.main(version_base="1.3", config_path=conf_dir(), config_name="predict")
@stage
def main(cfg: DictConfig) -> None:
    if cfg.mode not in MODES:
        raise ConfigError(f"mode={cfg.mode!r} is unknown; valid: {', '.join(MODES)}")
    input_dir, output_dir = Path(cfg.input_dir), Path(cfg.output_dir)
    if not input_dir.is_dir():
        raise DataError(f"{input_dir}: input_dir not found")
    paths = sorted(p for p in input_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise DataError(f"{input_dir}: no images ({', '.join(IMAGE_SUFFIXES)})")
    model, source_run = tracking.load_model(str(cfg.source), cfg.tracking.uri)
    (output_dir / "masks").mkdir(parents=True, exist_ok=True)
    (output_dir / "overlays").mkdir(parents=True, exist_ok=True)
    for path in tqdm(paths, desc="segmenting", unit="img"):
        image = np.asarray(open_image(path, "RGB"))
        if cfg.mode == "tile":
            probabilities = predict_tiled(model, image, cfg.tile_overlap, cfg.tta)
        else:
            probabilities = predict_resized(model, image, cfg.tta)
        labels = np.argmax(probabilities, axis=-1).astype(np.uint8)
        Image.fromarray(labels).save(output_dir / "masks" / f"{path.stem}.png")
        Image.fromarray(overlay(image, labels, probabilities.shape[-1])).save(
            output_dir / "overlays" / f"{path.stem}.png"
        )
    tags = {"stage": "predict", "source": str(cfg.source), "mode": cfg.mode}
    with tracking.run(
        cfg.tracking.uri, cfg.tracking.experiment, cfg.tracking.run_name, cfg.tracking.artifact_root, tags, source_run
    ):
        tracking.log_params({"source": cfg.source, "input_dir": str(input_dir), "output_dir": str(output_dir)})
        tracking.log_metrics({"num_images": len(paths)})
        for path in paths[: cfg.num_logged]:
            tracking.log_artifact(output_dir / "overlays" / f"{path.stem}.png", "overlays")
    log.info("wrote %d masks and overlays to %s", len(paths), output_dir)


if __name__ == "__main__":
    main()
