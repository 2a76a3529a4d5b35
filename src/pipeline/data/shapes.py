"""Synthetic "shapes": RGB images of circles, squares and triangles on textured backgrounds, with pixel masks.

Each image is a function of (seed, split, index) alone, so the set is reproducible and can be
generated in any order. Later shapes occlude earlier ones, and the mask records what is visible.
"""

import hashlib
import json
import math
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from pipeline.config.options import SPLITS
from pipeline.data.sensor import capture
from pipeline.data.sensor import check as check_sensor
from pipeline.errors import ConfigError

CLASSES = ("background", "circle", "square", "triangle")
FORMAT_VERSION = 1


@dataclass(frozen=True)
class ShapesSpec:
    """Everything that determines the generated set; the manifest stores it to decide when to rebuild."""

    image_size: int = 64
    counts: tuple[tuple[str, int], ...] = (("train", 2000), ("val", 200), ("test", 200))
    seed: int = 0
    min_shapes: int = 1
    max_shapes: int = 4
    min_size: int = 7
    max_size: int = 16
    min_contrast: float = 80.0
    noise_std: float = 8.0
    texture_amplitude: float = 25.0
    max_center_x: float = 1.0  # objects' centres lie left of this fraction of the width (shift experiment)
    plain: bool = False  # white shapes on black (no texture, no colour): the simplest possible scene
    sensor: str = "ideal"  # ideal | bayer | night: the camera that records the scene (pipeline.data.sensor)
    photons: float = 1000.0  # mean photons per photosite under full white (the light level)
    read_noise: float = 2.0  # electrons, added at readout

    def __post_init__(self):
        checks = {
            "image_size": self.image_size >= 16,
            "min_shapes": self.min_shapes >= 1,
            "max_shapes": self.max_shapes >= self.min_shapes,
            "min_size": self.min_size >= 2,
            "max_size": self.min_size <= self.max_size <= self.image_size // 2,
            "noise_std": self.noise_std >= 0,
            "texture_amplitude": self.texture_amplitude >= 0,
            "min_contrast": 0 <= self.min_contrast <= 200,
            "max_center_x": 2 * self.max_size <= self.max_center_x * self.image_size <= self.image_size,
        }
        valid = {
            "image_size": ">= 16",
            "min_shapes": ">= 1",
            "max_shapes": ">= min_shapes",
            "min_size": ">= 2",
            "max_size": "between min_size and image_size / 2",
            "noise_std": ">= 0",
            "texture_amplitude": ">= 0",
            "min_contrast": "in [0, 200]",
            "max_center_x": "in (0, 1] and leave room for a shape of max_size",
        }
        check_sensor(self.sensor, self.photons, self.read_noise)
        for key, ok in checks.items():
            if not ok:
                raise ConfigError(f"data.generator.{key}={getattr(self, key)} is invalid: must be {valid[key]}")
        for split, count in self.counts:
            if split not in SPLITS or count < 1:
                raise ConfigError(f"data.splits.{split}={count} is invalid: splits are {SPLITS}, counts >= 1")

    def to_json(self) -> dict:
        d = asdict(self)
        d["counts"] = dict(self.counts)
        return d


def _background(rng: np.random.Generator, size: int, spec: ShapesSpec) -> np.ndarray:
    """A colour gradient plus low-frequency gratings: smooth texture the network must learn to ignore."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    angle = rng.uniform(0, 2 * math.pi)
    t = (np.cos(angle) * xx + np.sin(angle) * yy + 1.5) / 3.0
    img = c0 + (c1 - c0) * t[..., None]
    for _ in range(2):
        theta, freq, phase = rng.uniform(0, math.pi), rng.uniform(1.0, 4.0), rng.uniform(0, 2 * math.pi)
        grating = np.sin(2 * math.pi * freq * (np.cos(theta) * xx + np.sin(theta) * yy) + phase)
        img += spec.texture_amplitude * grating[..., None] * rng.uniform(-1, 1, 3)
    return img


def _polygon(cls: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    corners = 4 if cls == "square" else 3
    # a square's "size" is its half-side; its circumradius is r * sqrt(2)
    radius = r * math.sqrt(2) if cls == "square" else r * 1.3
    return [
        (
            cx + radius * math.cos(angle + 2 * math.pi * k / corners),
            cy + radius * math.sin(angle + 2 * math.pi * k / corners),
        )
        for k in range(corners)
    ]


def render_sample(spec: ShapesSpec, split: str, index: int) -> tuple[np.ndarray, np.ndarray]:
    """Image (H, W, 3) uint8 and mask (H, W) uint8 for one sample; deterministic in (spec.seed, split, index)."""
    rng = np.random.default_rng([spec.seed, SPLITS.index(split), index])
    size = spec.image_size
    background = np.zeros((size, size, 3)) if spec.plain else _background(rng, size, spec)
    image = Image.fromarray(np.clip(background, 0, 255).astype(np.uint8))
    mask = Image.new("L", (size, size), 0)
    draw_image, draw_mask = ImageDraw.Draw(image), ImageDraw.Draw(mask)
    for _ in range(rng.integers(spec.min_shapes, spec.max_shapes + 1)):
        label = int(rng.integers(1, len(CLASSES)))
        r = rng.uniform(spec.min_size, spec.max_size)
        cx, cy = rng.uniform(r, spec.max_center_x * size - r), rng.uniform(r, size - r)
        local = background[int(cy), int(cx)]
        colour = rng.uniform(0, 255, 3)
        for _ in range(20):  # keep the shape visible against the background under it
            if np.abs(colour - local).sum() >= spec.min_contrast:
                break
            colour = rng.uniform(0, 255, 3)
        fill = (255, 255, 255) if spec.plain else tuple(int(c) for c in colour)
        if CLASSES[label] == "circle":
            box = (cx - r, cy - r, cx + r, cy + r)
            draw_image.ellipse(box, fill=fill)
            draw_mask.ellipse(box, fill=label)
        else:
            points = _polygon(CLASSES[label], cx, cy, r, rng.uniform(0, 2 * math.pi))
            draw_image.polygon(points, fill=fill)
            draw_mask.polygon(points, fill=label)
    pixels = np.asarray(image, dtype=np.float32) + rng.normal(0, spec.noise_std, (size, size, 3))
    pixels = np.clip(pixels, 0, 255).astype(np.uint8)
    if spec.sensor != "ideal":  # its own random stream: the scene is the same whatever the camera
        camera = np.random.default_rng([spec.seed, SPLITS.index(split), index, 1])
        pixels = capture(pixels, spec.sensor, spec.photons, spec.read_noise, camera)
    return pixels, np.asarray(mask, dtype=np.uint8)


def folder_checksum(root: Path) -> str:
    """sha256 over every split file's relative path and bytes, in sorted order."""
    digest = hashlib.sha256()
    for path in sorted(
        p for split in SPLITS if (root / split).is_dir() for p in (root / split).rglob("*") if p.is_file()
    ):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return "sha256:" + digest.hexdigest()


def read_manifest(root: Path) -> dict | None:
    try:
        return json.loads((root / "manifest.json").read_text())
    except (OSError, ValueError):
        return None


def is_current(root: Path, spec: ShapesSpec) -> bool:
    """True when `root` holds exactly the set `spec` describes, untouched since it was written."""
    manifest = read_manifest(root)
    return (
        manifest is not None
        and manifest.get("format_version") == FORMAT_VERSION
        and manifest.get("spec") == spec.to_json()
        and manifest.get("checksum") == folder_checksum(root)
    )


def generate(root: str | Path, spec: ShapesSpec, progress: bool = True) -> dict:
    """Write the set to root/{split}/{images,masks}/*.png plus manifest.json, unless it is already current.

    The set is written to a sibling temporary folder and moved into place at the end, so an
    interrupted run never leaves a half-written set behind a valid-looking manifest.
    """
    root = Path(root)
    if is_current(root, spec):
        return read_manifest(root)
    tmp = root.with_name(f".{root.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    total = sum(count for _, count in spec.counts)
    with tqdm(total=total, desc=f"generating {root.name}", unit="img", disable=not progress) as bar:
        for split, count in spec.counts:
            (tmp / split / "images").mkdir(parents=True)
            (tmp / split / "masks").mkdir(parents=True)
            for i in range(count):
                image, mask = render_sample(spec, split, i)
                Image.fromarray(image).save(tmp / split / "images" / f"{i:05d}.png")
                Image.fromarray(mask).save(tmp / split / "masks" / f"{i:05d}.png")
                bar.update()
    manifest = {
        "name": root.name,
        "format_version": FORMAT_VERSION,
        "classes": list(CLASSES),
        "counts": dict(spec.counts),
        "seed": spec.seed,
        "spec": spec.to_json(),
        "checksum": folder_checksum(tmp),
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    if is_current(root, spec):  # another process (a parallel job or test) finished the same set meanwhile:
        shutil.rmtree(tmp, ignore_errors=True)  # keep its copy, which it may be reading
        return read_manifest(root)
    if root.exists():
        shutil.rmtree(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    try:
        tmp.rename(root)
    except OSError:  # lost the race for the rename itself
        shutil.rmtree(tmp, ignore_errors=True)
        if not is_current(root, spec):
            raise
    return read_manifest(root)
