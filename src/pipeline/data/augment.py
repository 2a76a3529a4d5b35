"""Albumentations pipelines from config: one list of {name: <Transform>, **kwargs} per split.

Albumentations applies geometric transforms to image and mask together and photometric ones to the
image only, so a declared pipeline can never misalign a mask.
"""

import logging
import warnings

import albumentations as A

from pipeline.errors import ConfigError
from pipeline.tasks.targets import target_of

log = logging.getLogger(__name__)
# colour shifts that have no meaning for a grey image: albumentations skips them and warns at every image
GREY_NOOPS = {"HueSaturationValue": ("hue_shift_limit", "sat_shift_limit")}


def build_augmentation(
    transforms: list[dict] | None,
    seed: int | None = None,
    key: str = "augment.train",
    target: str = "mask",
    channels: int = 3,
) -> A.Compose | None:
    """A.Compose over the listed transforms, or None for an empty list. With target="boxes" the boxes
    (albumentations' own format: x_min, y_min, x_max, y_max as fractions) move with their images. For grey
    images (channels=1) a colour shift that cannot apply (HueSaturationValue's hue and saturation) is set to 0
    and the log says so, instead of albumentations skipping it with a warning at every image."""
    if not transforms:
        return None
    built = []
    for i, spec in enumerate(transforms):
        spec = dict(spec)
        name = spec.pop("name", None)
        noops = [k for k in GREY_NOOPS.get(name, ()) if not _zero(spec.get(k, 1))] if channels == 1 else []
        if noops:
            log.info("%s[%d] (%s): the images are grey (1 channel), so %s do not apply: set to 0", key, i, name,
                     " and ".join(f"{k}={spec.get(k, 'default')}" for k in noops))  # fmt: skip
            spec.update(dict.fromkeys(noops, 0))
        transform = getattr(A, name, None) if isinstance(name, str) else None
        if not (isinstance(transform, type) and issubclass(transform, A.BasicTransform)):
            raise ConfigError(
                f"{key}[{i}].name={name!r} is not an albumentations transform "
                "(valid: a class of albumentations, e.g. HorizontalFlip, RandomRotate90, RandomBrightnessContrast)"
            )
        with warnings.catch_warnings(record=True) as caught:  # albumentations only warns on unknown arguments
            warnings.simplefilter("always")
            try:
                built.append(transform(**spec))
            except (TypeError, ValueError) as err:
                raise ConfigError(f"{key}[{i}] ({name}): invalid arguments {spec}: {err}") from None
        for warning in caught:
            if "are not valid for transform" in str(warning.message):
                raise ConfigError(f"{key}[{i}] ({name}): invalid arguments {spec}: {warning.message}")
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return A.Compose(built, seed=seed, bbox_params=target_of(target).bbox_params())


def _zero(limit) -> bool:
    """A shift limit that shifts nothing: 0, or a range (0, 0)."""
    return all(v == 0 for v in limit) if isinstance(limit, (list, tuple)) else limit == 0
