"""Data sources: make a data config's set exist on disk, then read its splits, by `data.layout`.

One registry (READERS) maps each layout to its reader; a reader takes the data config, the set's root
and gives its three splits as Samples (pipeline.data.samples): indexes of files decoded when read, or
arrays for the bundled and generated sets, with targets of the kind the data's task learns (masks, labels
or boxes). Library functions for the stages and notebooks alike.
"""

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from pipeline.config.options import FITS, SPLITS
from pipeline.config.spec import Spec, plain
from pipeline.data import oxford_pets
from pipeline.data.classification import (
    digits,
    glyphs,
    image_folder,
    mnist,
    per_class_indices,
    select_classes,
)
from pipeline.data.folders import (
    BadFiles,
    ImageReader,
    MaskReader,
    PairDecoder,
    folder_pairs,
    load_split,
    pair_samples,
    resolve_channels,
)
from pipeline.data.oxford_pets import pet_pairs
from pipeline.data.pixels import Intensity
from pipeline.data.samples import ArraySamples, Samples, cache_splits, decode_all
from pipeline.data.shapes import CLASSES, ShapesSpec, generate
from pipeline.errors import ConfigError, DataError
from pipeline.tasks.targets import target_of

log = logging.getLogger(__name__)
Split = tuple[np.ndarray, np.ndarray]
Reader = Callable[[Spec, Path, BadFiles], dict[str, Samples]]


def _arrays(splits: dict[str, Split]) -> dict[str, Samples]:
    return {split: ArraySamples(*splits[split]) for split in SPLITS}


def _digit_subset(images: np.ndarray, labels: np.ndarray, data: Spec) -> Split:
    """Labels are the digits: data.classes may pick a subset (e.g. 5-9), relabelled 0..k-1."""
    keep = [int(c) for c in data.classes]
    return (images, labels) if keep == list(range(10)) else select_classes(images, labels, keep)


def _digits(data: Spec, root: Path, bad: BadFiles) -> dict[str, Samples]:
    splits = digits(data.image_size, data.val_fraction, data.test_fraction, data.split_seed)
    return _arrays({split: _digit_subset(*pair, data) for split, pair in splits.items()})


def _mnist(data: Spec, root: Path, bad: BadFiles) -> dict[str, Samples]:
    splits = mnist(str(root), data.image_size, data.val_fraction, data.split_seed)
    return _arrays({split: _digit_subset(*pair, data) for split, pair in splits.items()})


def _glyphs(data: Spec, root: Path, bad: BadFiles) -> dict[str, Samples]:
    classes = list(data.classes)
    return _arrays(glyphs(classes, data.image_size, data.per_class, data.split_seed, data.val_fraction,
                          data.test_fraction))  # fmt: skip


def intensity(data: Spec) -> Intensity:
    """data.intensity (auto when the data config has none): how image values become the model's 0..255."""
    config = data.get("intensity")
    return Intensity.from_config(plain(config))


def _image_folder(data: Spec, root: Path, bad: BadFiles) -> dict[str, Samples]:
    classes = [str(c) for c in data.classes] if data.classes else None
    grayscale, fit = data.get("grayscale", "error"), _fit(data)
    return image_folder(
        root, classes, data.image_size, data.val_fraction, data.test_fraction, data.split_seed, bad, grayscale, fit,
        data.get("channels", 3), intensity(data),
    )  # fmt: skip


def _shapes_objects(data: Spec, root: Path, bad: BadFiles) -> dict[str, Samples]:
    """The generated shapes set with one target per image, made from its mask by the task's kind of target: the
    one object's class (shapes_cls), its box (shapes_loc), the fraction of the image each class covers
    (shapes_cover)."""
    from pipeline.tasks import get_task

    target, out = target_of(get_task(data.task).target), {}
    for split in SPLITS:
        images, masks = load_split(root, split, len(CLASSES), data.image_size, bad, data.get("grayscale", "error"))
        out[split] = ArraySamples(images, target.from_masks(masks, len(CLASSES)), target.kind)
    return out


def mask_reader(data: Spec, label_offset: int = 0) -> MaskReader:
    """How the data's masks become class indices: data.mask_values, data.class_colors, data.ignore_label
    (which follows loss.ignore_label) - see pipeline.data.folders.MaskReader."""
    num_classes = len(data.classes or [])
    values, colors, ignore = data.get("mask_values"), data.get("class_colors"), data.get("ignore_label")
    if values is not None and colors is not None:
        raise ConfigError("data.mask_values and data.class_colors are both set; valid: one of them (or neither)")
    for key, given in (("mask_values", values), ("class_colors", colors)):
        if given is not None and len(given) != num_classes:
            raise ConfigError(
                f"data.{key} has {len(given)} entries but data.classes has {num_classes} ({list(data.classes)}); "
                "valid: one per class, in data.classes order"
            )
    if colors is not None and not all(len(c) == 3 and all(0 <= int(v) <= 255 for v in c) for c in colors):
        raise ConfigError(f"data.class_colors={[list(c) for c in colors]} is invalid: each must be [r,g,b] in 0..255")
    if ignore is not None and not 0 <= int(ignore) <= 255:
        raise ConfigError(f"loss.ignore_label={ignore} is invalid for masks: must be a value in 0..255")
    return MaskReader(
        num_classes,
        label_offset,
        None if values is None else tuple(int(v) for v in values),
        None if colors is None else tuple(tuple(int(v) for v in c) for c in colors),
        None if ignore is None else int(ignore),
    )


def _pairs(data: Spec, pairs_of: Callable[[str], list], label_offset: int = 0) -> dict[str, Samples]:
    """Segmentation (image, mask) file pairs per split, decoded when read; data.channels=auto is resolved
    from the image files' headers."""
    size, fit = data.image_size, _fit(data)
    pairs = {split: pairs_of(split) for split in SPLITS}
    paths = [image for split in SPLITS for image, _ in pairs[split]]
    channels = resolve_channels(data.get("channels", 3), paths)
    image = ImageReader(channels, data.get("grayscale", "error"), intensity(data))
    masks, out = mask_reader(data, label_offset), {}
    for split in SPLITS:
        centre = split != "train"
        decode = PairDecoder(masks, size, image, fit, centre)
        crop = size if fit == "crop" and not centre else None
        out[split] = pair_samples(pairs[split], decode, (size or 0, size or 0, channels), crop)
    return out


def _folders(data: Spec, root: Path, bad: BadFiles) -> dict[str, Samples]:
    return _pairs(data, lambda split: folder_pairs(root, split, bad))


def _oxford_pets(data: Spec, root: Path, bad: BadFiles) -> dict[str, Samples]:
    pairs_of = lambda split: pet_pairs(root, split, data.val_fraction, data.split_seed)  # noqa: E731
    return _pairs(data, pairs_of, oxford_pets.LABEL_OFFSET)


def _fit(data: Spec) -> str:
    from pipeline.tasks import get_task

    fit = data.get("fit", "stretch")
    if fit not in FITS:
        raise ConfigError(f"data.fit={fit!r} is invalid; valid: {', '.join(FITS)}")
    if fit == "crop" and not data.get("image_size"):
        raise ConfigError("data.fit=crop needs data.image_size (the side of the square crops)")
    if fit == "crop" and not target_of(get_task(data.get("task", "segmentation")).target).croppable:
        raise ConfigError(f"data.fit=crop changes what a {data.task} target measures; valid: data.fit=stretch")
    return fit


READERS: dict[str, Reader] = {
    "folders": _folders,
    "oxford_pets": _oxford_pets,
    "digits": _digits,
    "glyphs": _glyphs,
    "image_folder": _image_folder,
    "mnist": _mnist,
    "shapes_cls": _shapes_objects,
    "shapes_cover": _shapes_objects,
}
BUNDLED = ("digits", "glyphs")  # shipped with a library, or generated in memory


def prepare_data(data: Spec, progress: bool = True) -> Path:
    """Make sure the dataset `data` describes is on disk; returns its root folder."""
    if data.get("layout") in BUNDLED:
        return Path(".")  # shipped with a library: nothing to prepare or read from disk
    root = Path(data.root)
    if data.get("layout") == "oxford_pets":
        oxford_pets.extract_archives(root)  # the dataset's two tarballs, as downloaded, when not yet unpacked
    if data.get("generator") is None:
        if not root.is_dir():
            raise DataError(f"{root}: data.root folder not found (data={data.name}, layout {data.get('layout')})")
        return root
    expected = list(CLASSES[1:]) if data.get("layout") in ("shapes_cls", "shapes_cover") else list(CLASSES)
    if list(data.classes) != expected:
        raise ConfigError(f"data.classes={list(data.classes)} is invalid: the shapes generator draws {expected}")
    generator = plain(data.generator)
    counts = tuple((split, count) for split, count in data.splits.items())
    try:
        spec = ShapesSpec(image_size=data.image_size, counts=counts, **generator)
    except TypeError as err:
        raise ConfigError(f"data.generator: {err}; valid keys: {', '.join(ShapesSpec.__dataclass_fields__)}") from None
    manifest = generate(root, spec, progress=progress)
    log.info("dataset %s at %s: %s, %s", data.name, root, manifest["counts"], manifest["checksum"][:19])
    return root


def split_samples(
    data: Spec, root: Path, bad: BadFiles | None = None, workers: int = 1, cache: bool = True
) -> dict[str, Samples]:
    """All three splits of a data config, from one call: {"train": Samples, "val": ..., "test": ...}.

    A split is an index of its samples (pipeline.data.samples): a user's files are decoded into memory
    once when data.cache says so (auto: when the decoded split fits data.cache_budget), else streamed.
    data.splits.<split> (when set) keeps the first N samples of the split, for every layout (trainer=debug's
    caps); generated sets are generated at exactly that size. data.k_per_class (classification sets) keeps
    at most k training images of each class; val and test stay whole, so runs with different k are scored
    on the same images. Unusable files raise a DataError naming them, or are skipped and recorded in `bad`
    (data.on_bad_file=skip). cache=False gives the indexes as they are (to profile them before caching)."""
    from pipeline.tasks import get_task

    layout = data.get("layout", "folders")
    if layout not in READERS:
        raise ConfigError(f"data.layout={layout!r} is unknown; valid: {', '.join(READERS)}")
    bad = bad if bad is not None else BadFiles(data.get("on_bad_file", "error"))
    splits = READERS[layout](data, root, bad)
    for split, samples in splits.items():
        cap = (data.get("splits") or {}).get(split)
        if cap is not None and len(samples) > cap:  # trainer=debug's 16/8/8: every source, not only generated ones
            splits[split] = samples = samples.subset(range(cap))
        k = data.get("k_per_class")
        if k is not None and split == "train":
            if (
                not (isinstance(k, int) and k >= 1)
                or not target_of(get_task(data.get("task", "segmentation")).target).image_class
            ):
                raise ConfigError(
                    f"data.k_per_class={k!r} is invalid: must be null or a positive integer (classification)"
                )
            splits[split] = samples.subset(per_class_indices(samples.targets, k, data.get("k_seed", 0)))
    if not cache:
        return splits
    return cache_splits(splits, data.get("cache", "auto"), data.get("cache_budget", "2GiB"), bad, workers)


def load_data(data: Spec, root: Path, split: str, bad: BadFiles | None = None) -> Split:
    """Images (N, H, W, C) uint8 and targets of one split, decoded into memory: masks (N, H, W) uint8,
    class labels (N,) or boxes (N, 4). See split_samples."""
    return load_splits(data, root, bad, (split,))[split]


def load_splits(
    data: Spec, root: Path, bad: BadFiles | None = None, splits: tuple[str, ...] = SPLITS
) -> dict[str, Split]:
    """The splits asked for decoded into memory as arrays: {"train": (images, targets), "val": ..., "test": ...};
    the others are only indexed (evaluating the test split decodes none of the training images)."""
    indexed = split_samples(data, root, bad, cache=False)
    return {split: decode_all(indexed[split], bad, desc=f"decoding {split}").arrays() for split in splits}


def class_names(data: Spec, root: Path) -> list[str]:
    """The data's class names: from the config, or (image_folder with classes: null) its sorted sub-folders."""
    if data.classes:
        return [str(c) for c in data.classes]
    if data.get("layout") == "image_folder" and root.is_dir():
        return sorted(p.name for p in root.iterdir() if p.is_dir())
    raise ConfigError(f"data.classes is empty: list the class names for data={data.name}")
