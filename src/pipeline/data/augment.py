"""Albumentations pipelines from config: one list of {name: <Transform>, **kwargs} per split.

Albumentations applies geometric transforms to image and mask together and photometric ones to the
image only, so a declared pipeline can never misalign a mask.
"""

import warnings

import albumentations as A

from pipeline.errors import ConfigError
from pipeline.tasks.targets import target_of


def build_augmentation(
    transforms: list[dict] | None, seed: int | None = None, key: str = "augment.train", target: str = "mask"
) -> A.Compose | None:
    """A.Compose over the listed transforms, or None for an empty list. With target="boxes" the boxes
    (albumentations' own format: x_min, y_min, x_max, y_max as fractions) move with their images."""
    if not transforms:
        return None
    built = []
    for i, spec in enumerate(transforms):
        spec = dict(spec)
        name = spec.pop("name", None)
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
