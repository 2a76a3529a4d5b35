"""Flat vs Gaussian blending of overlapping tiles (`cnn predict mode=tile tile_blend=...`), measured.

    python bench/tile_blending.py <a shapes U-Net: .keras file or run id> [--size 256] [--overlap 0.5]
The shapes test images (64 px) are enlarged to --size (bilinear; masks nearest) so the 64-px model sees
them only through tiles; prints the test mean IoU of each blending over the 200 test images.
"""

import argparse
import time

import numpy as np
from PIL import Image

from pipeline.data.sources import load_data, prepare_data
from pipeline.evaluation.metrics import confusion_matrix, segmentation_scores
from pipeline.tasks.segmentation import predict_tiled


def enlarge(array: np.ndarray, size: int, resample) -> np.ndarray:
    return np.asarray(Image.fromarray(array).resize((size, size), resample))


def main() -> None:
    from hydra import compose, initialize_config_dir

    from pipeline import tracking
    from pipeline.config import conf_dir

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("source")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--overlap", type=float, default=0.5)
    parser.add_argument("--uri", default=None)
    args = parser.parse_args()
    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        cfg = compose("config")
    model, _ = tracking.load_model(args.source, args.uri or cfg.tracking.uri)
    images, masks = load_data(cfg.data, prepare_data(cfg.data, progress=False), "test")
    big_images = [enlarge(image, args.size, Image.BILINEAR) for image in images]
    big_masks = np.stack([enlarge(mask, args.size, Image.NEAREST) for mask in masks])
    classes = list(cfg.data.classes)
    print(f"| blending | test mean IoU ({len(images)} images at {args.size}², tile 64, overlap {args.overlap}) | s |")
    print("|---|---|---|")
    for blend in ("flat", "gaussian"):
        start = time.perf_counter()
        predicted = np.stack(
            [np.argmax(predict_tiled(model, image, args.overlap, blend=blend), -1) for image in big_images]
        )
        iou = segmentation_scores(confusion_matrix(big_masks, predicted, len(classes)), classes)["mean_iou"]
        print(f"| {blend} | {iou:.4f} | {time.perf_counter() - start:.0f} |", flush=True)


if __name__ == "__main__":
    main()
