"""Transforms: `create_transforms(cfg.data, is_training)` wraps timm's `create_transform`; must not read paths."""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable

from timm.data import create_transform
from timm.data.auto_augment import augment_and_mix_transform, auto_augment_transform, rand_augment_transform
from timm.data.random_erasing import RandomErasing, _get_pixels
from torchvision import transforms as T

from tunecv.config import DataConfig
from tunecv.errors import UserError

logger = logging.getLogger(__name__)


def create_transforms(cfg: DataConfig, is_training: bool, *, flips: tuple[float, float] | None = None,
                      uint8: bool = False) -> Callable:
    """Training: RandomResizedCrop + flips + colour jitter/auto-augment + erasing; eval: resize + centre crop.
    no_aug: training images get the evaluation transform and the flips only (deterministic but for the flips).
    `flips`: (horizontal, vertical) flip probabilities added after the evaluation crop (default: the config's
    under no_aug, none otherwise). `uint8`: end at a uint8 tensor; `DevicePrefetcher` normalises (and erases)
    on the GPU."""
    if not is_training or cfg.no_aug:
        hflip, vflip = flips if flips is not None else (cfg.hflip, cfg.vflip) if is_training else (0.0, 0.0)
        transform = _with_flips(_create(cfg, False, uint8), hflip, vflip)
    else:
        transform = _create(cfg, True, uint8)
    logger.debug("transforms (%s%s): %s", "train" if is_training else "eval", ", no_aug" if is_training and cfg.no_aug
                 else "", ", ".join(type(t).__name__ for t in getattr(transform, "transforms", [transform])))
    return transform


def eval_resize(cfg: DataConfig) -> tuple[int, str]:
    """(shorter side in px, interpolation) that the evaluation transform resizes to before its centre crop, read
    from the transform itself: what an exported model's users must reproduce."""
    resize = next(step for step in create_transforms(cfg, is_training=False).transforms if isinstance(step, T.Resize))
    size = resize.size if isinstance(resize.size, int) else min(resize.size)
    return size, resize.interpolation.value


def _with_flips(transform: Callable, hflip: float, vflip: float) -> Callable:
    """Flips after the centre crop (the crop is symmetric, so it is the crop of the flipped image)."""
    flips = ([T.RandomHorizontalFlip(hflip)] if hflip else []) + ([T.RandomVerticalFlip(vflip)] if vflip else [])
    if not flips:
        return transform
    steps = list(transform.transforms)
    crop = next(i for i, step in enumerate(steps) if isinstance(step, T.CenterCrop))
    return T.Compose(steps[:crop + 1] + flips + steps[crop + 1:])


def _create(cfg: DataConfig, is_training: bool, uint8: bool) -> Callable:
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
        re_prob=0.0,  # timm's erasing takes no area or aspect range: ours ends the transform, where timm puts its own
        crop_pct=cfg.crop_pct,
        use_prefetcher=uint8,
    )
    if is_training and cfg.re_prob > 0 and not uint8:  # with uint8 the DevicePrefetcher erases
        transform.transforms.append(random_erasing(cfg, "cpu"))
    return transform


def random_erasing(cfg: DataConfig, device: str) -> RandomErasing:
    """timm's RandomErasing with the config's probability, fill, area range (re_scale), aspect range (re_ratio) and
    tries at a box that fits (re_max_attempts), on the CPU in the transform or on the GPU in `DevicePrefetcher`."""
    return ErasingWithAttempts(cfg.re_max_attempts, cfg.re_prob, min_area=cfg.re_scale[0], max_area=cfg.re_scale[1],
                               min_aspect=cfg.re_ratio[0], max_aspect=cfg.re_ratio[1],
                               mode="pixel" if cfg.re_value == "random" else "const", device=device)


class ErasingWithAttempts(RandomErasing):
    """timm's RandomErasing draws up to 10 boxes until one fits inside the image; MindCV lets the config set the
    number (halonet's recipe: 1, so an image whose first box does not fit stays whole)."""

    def __init__(self, max_attempts: int, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.max_attempts = max_attempts

    def _erase(self, img, chan, img_h, img_w, dtype):
        if random.random() > self.probability:
            return
        area = img_h * img_w
        for _ in range(self.max_attempts):
            target_area = random.uniform(self.min_area, self.max_area) * area
            aspect_ratio = math.exp(random.uniform(*self.log_aspect_ratio))
            h, w = round(math.sqrt(target_area * aspect_ratio)), round(math.sqrt(target_area / aspect_ratio))
            if w < img_w and h < img_h:
                top, left = random.randint(0, img_h - h), random.randint(0, img_w - w)
                img[:, top:top + h, left:left + w] = _get_pixels(self.per_pixel, self.rand_color, (chan, h, w),
                                                                 dtype=dtype, device=self.device)
                return


def _jitter(values: tuple[float, ...] | None) -> float | tuple[float, ...]:
    if not values:
        return 0.0
    return values[0] if len(values) == 1 else tuple(values)


def draft_size(cfg: DataConfig, is_training: bool) -> int:
    """The shorter side a decoded image needs so no crop is upscaled: a RandomResizedCrop of area fraction
    scale[0] spans sqrt(scale[0]) of the side (capped at 4x); evaluation resizes to image_resize / crop_pct."""
    if is_training and not cfg.no_aug:
        return round(cfg.image_resize / max(cfg.scale[0], 1 / 16) ** 0.5)
    return round(cfg.image_resize / (cfg.crop_pct or 1.0))


def check_auto_augment(policy: str) -> None:
    """A UserError when timm does not know the policy (it would fail at the first batch)."""
    # the same dispatch as timm's create_transform
    builder = rand_augment_transform if policy.startswith("rand") else \
        augment_and_mix_transform if policy.startswith("augmix") else auto_augment_transform
    try:
        builder(policy, {"translate_const": 100})
    except (AssertionError, KeyError, ValueError, IndexError):
        raise UserError(f"auto_augment {policy!r} is not a policy timm knows; use e.g. rand-m7-mstd0.5, "
                        "original, augmix-m5 or 3a") from None
