"""Model names: which timm or torchvision network a name builds (MindCV's names mapped), what it takes (input
size, the data settings of its weights) and whether ImageNet weights exist for it; nothing is built here but
for a check on the meta device.
"""

from __future__ import annotations

import difflib
import functools
import logging
from dataclasses import replace
from typing import Any

import timm
import torch
import torchvision

from tunecv.config import DataConfig, ModelConfig
from tunecv.errors import UserError
from tunecv.models.aux_heads import check_aux_factor
from tunecv.models.mindcv_names import MINDCV_MODELS, mindcv_target, no_equivalent

logger = logging.getLogger(__name__)

IMAGENET_DEFAULTS = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225),
                     "interpolation": "bilinear", "crop_pct": 0.875}


@functools.lru_cache(maxsize=1)
def _timm_names() -> frozenset[str]:
    return frozenset(timm.list_models())


@functools.lru_cache(maxsize=1)
def _torchvision_names() -> frozenset[str]:
    return frozenset(torchvision.models.list_models(module=torchvision.models))


def resolve_model_name(name: str) -> tuple[str, str]:
    """(source, name) for a user's model name: source is 'timm' or 'torchvision'; MindCV's names are mapped."""
    target = mindcv_target(name)
    if target is not None:
        return ("timm" if target[0] in _timm_names() else "torchvision"), target[0]
    if name in _timm_names() or name.split(".")[0] in _timm_names():
        return "timm", name
    if name in _torchvision_names():
        return "torchvision", name
    reason = no_equivalent(name)
    if reason is not None:
        raise UserError(f"model {name!r} (MindCV) has no equivalent in timm or torchvision: {reason}")
    options = sorted(_timm_names() | _torchvision_names() | set(MINDCV_MODELS))
    matches = difflib.get_close_matches(name.lower(), options, n=4, cutoff=0.6)
    hint = f"; closest: {', '.join(matches)}" if matches else "; see timm.list_models()"
    raise UserError(f"unknown model {name!r}{hint}")


def architecture_options(name: str) -> dict[str, Any]:
    """The keyword arguments that give a MindCV model's depth or width to the timm or torchvision family it maps to
    ({} for every other name)."""
    target = mindcv_target(name)
    return target[1] if target is not None else {}


def built_as(name: str) -> str | None:
    """What a mapped (MindCV) name builds, e.g. "timm's rexnet_100 with width_mult=0.9"; None for a timm or
    torchvision name."""
    target = mindcv_target(name)
    if target is None:
        return None
    source = "timm" if target[0] in _timm_names() else "torchvision"
    options = ", ".join(f"{key}={value}" for key, value in target[1].items())
    return f"{source}'s {target[0]}" + (f" with {options}" if options else "")


def check_model_options(cfg: ModelConfig) -> None:
    """The model's own options, checked without building it (`--print_config`)."""
    source, resolved = resolve_model_name(cfg.model)
    check_aux_factor(cfg.model, source, resolved, cfg.aux_factor)
    if cfg.pretrained and not cfg.ckpt_path and not has_imagenet_weights(cfg.model):
        raise UserError(f"{source} has no ImageNet weights for {cfg.model}"
                        + (f" ({built_as(cfg.model)})" if built_as(cfg.model) else "")
                        + "; set pretrained false, or give ckpt_path")


def has_imagenet_weights(name: str) -> bool:
    """Whether timm or torchvision can download weights for the network the name builds (a MindCV width or depth
    timm builds from a sibling has none)."""
    source, resolved = resolve_model_name(name)
    if architecture_options(name):
        return False
    if source == "torchvision":
        return True
    pretrained_cfg = timm.models.get_pretrained_cfg(resolved)
    return pretrained_cfg is not None and bool(pretrained_cfg.url or pretrained_cfg.hf_hub_id or pretrained_cfg.file)


def fixed_input_size(name: str) -> int | None:
    """The only input size a model accepts (ViT/Swin-style fixed patch grids), or None when any size works."""
    source, resolved = resolve_model_name(name)
    if source == "torchvision":
        return 224 if resolved.startswith(("vit_", "maxvit")) else None
    pretrained_cfg = timm.models.get_pretrained_cfg(resolved)
    if pretrained_cfg is None or not pretrained_cfg.fixed_input_size:
        return None
    return int(pretrained_cfg.input_size[-1])


def pretrained_input_size(name: str) -> int:
    """The input size the model's ImageNet weights were trained at (224 where its config says none)."""
    source, resolved = resolve_model_name(name)
    pretrained_cfg = timm.models.get_pretrained_cfg(resolved) if source == "timm" else None
    return int(pretrained_cfg.input_size[-1]) if pretrained_cfg is not None else 224


def size_options(name: str, input_size: int | None) -> dict[str, Any]:
    """What a model of one fixed input size needs to take `input_size` instead: timm's dynamic_img_size (ViT, Swin:
    the position embeddings resampled to the input's grid; the weights keep their shapes). A UserError for a model
    that cannot."""
    fixed = None if input_size is None else fixed_input_size(name)
    if fixed is None or fixed == input_size:
        return {}
    source, resolved = resolve_model_name(name)
    if source == "timm" and _takes_dynamic_size(resolved):
        return {"dynamic_img_size": True}
    raise UserError(f"model {name} takes {fixed} px inputs only; set image_resize {fixed} or leave it out")


@functools.lru_cache(maxsize=32)
def _takes_dynamic_size(timm_name: str) -> bool:
    try:
        with torch.device("meta"):
            timm.create_model(timm_name, pretrained=False, dynamic_img_size=True)
    except TypeError:
        return False
    return True


def data_defaults(name: str) -> dict[str, Any]:
    """mean, std, interpolation, crop_pct of the model's pretrained weights, without building it."""
    source, resolved = resolve_model_name(name)
    if source == "torchvision":
        return dict(IMAGENET_DEFAULTS)
    pretrained_cfg = timm.models.get_pretrained_cfg(resolved)
    if pretrained_cfg is None:
        return dict(IMAGENET_DEFAULTS)
    return {"mean": tuple(pretrained_cfg.mean), "std": tuple(pretrained_cfg.std),
            "interpolation": pretrained_cfg.interpolation or "bilinear",
            "crop_pct": pretrained_cfg.crop_pct or 0.875}


def input_settings(data: DataConfig, model: ModelConfig) -> DataConfig:
    """mean/std/interpolation/crop_pct from the model's pretrained config when not given; MindCV's 0-255 mean/std
    rescaled; the input size of a model that takes one size only."""
    defaults = data_defaults(model.model)
    mean, std = data.mean or defaults["mean"], data.std or defaults["std"]
    if max(mean) > 1.0:  # MindCV writes mean/std on the 0-255 scale
        mean = tuple(m / 255.0 for m in mean)
    if max(std) > 1.0:
        std = tuple(s / 255.0 for s in std)
    if model.in_channels == 1:  # grayscale input: one value, the average of the model's RGB ones
        mean, std = mean if data.mean else (sum(mean) / len(mean),), std if data.std else (sum(std) / len(std),)
    if len(mean) != model.in_channels or len(std) != model.in_channels:
        raise UserError(f"mean and std need {model.in_channels} values (in_channels), got {mean} and {std}")
    return replace(data, image_resize=input_size(data.image_resize, model.model),
                   mean=tuple(round(m, 6) for m in mean), std=tuple(round(s, 6) for s in std),
                   interpolation=data.interpolation or defaults["interpolation"],
                   crop_pct=data.crop_pct or defaults["crop_pct"])


def input_size(image_resize: int, model_name: str) -> int:
    """image_resize, or the only size the model takes (crossvit: 240) when image_resize is left at its default.
    Another size set on purpose: a ViT or Swin resamples its position embeddings to it, other models refuse it."""
    fixed = fixed_input_size(model_name)
    if fixed is None or image_resize == fixed:
        return image_resize
    if image_resize == DataConfig.image_resize:  # the schema's default
        logger.info("input: %s takes %d px inputs, so image_resize is %d", model_name, fixed, fixed)
        return fixed
    size_options(model_name, image_resize)
    logger.info("input: %s runs at %d px, its position embeddings resampled from its %d px grid", model_name,
                image_resize, fixed)
    return image_resize
