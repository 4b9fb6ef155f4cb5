"""Transforms: `create_transforms(cfg.data, is_training)` wraps timm's `create_transform`; must not read paths."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from timm.data import create_transform

if TYPE_CHECKING:
    from tunecv.config import DataConfig

logger = logging.getLogger(__name__)


def create_transforms(cfg: DataConfig, is_training: bool) -> Callable:
    """Training: RandomResizedCrop + flips + colour jitter/auto-augment + erasing; eval: resize + centre crop."""
    # timm picks a random interpolation per image for "random"; evaluation must be deterministic
    interpolation = "bilinear" if not is_training and cfg.interpolation == "random" else cfg.interpolation
    transform = create_transform(
        input_size=cfg.image_resize,
        is_training=is_training,
        scale=tuple(cfg.scale),
        ratio=tuple(cfg.ratio),
        hflip=cfg.hflip,
        vflip=cfg.vflip,
        color_jitter=_jitter(cfg.color_jitter),
        auto_augment=cfg.auto_augment,
        interpolation=interpolation,
        mean=tuple(cfg.mean),
        std=tuple(cfg.std),
        re_prob=cfg.re_prob,
        re_mode="pixel" if cfg.re_value == "random" else "const",
        crop_pct=cfg.crop_pct,
    )
    logger.info("transforms (%s): %s", "train" if is_training else "eval",
                ", ".join(type(t).__name__ for t in getattr(transform, "transforms", [transform])))
    return transform


def _jitter(values: tuple[float, ...] | None) -> float | tuple[float, ...]:
    if not values:
        return 0.0
    return values[0] if len(values) == 1 else tuple(values)


def draft_size(cfg: DataConfig, is_training: bool) -> int:
    """The shorter side a decoded image needs so no crop is upscaled: a RandomResizedCrop of area fraction
    scale[0] spans sqrt(scale[0]) of the side (capped at 4x); evaluation resizes to image_resize / crop_pct."""
    if is_training:
        return round(cfg.image_resize / max(cfg.scale[0], 1 / 16) ** 0.5)
    return round(cfg.image_resize / (cfg.crop_pct or 1.0))
