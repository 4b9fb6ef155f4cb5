"""Optimizer: `create_optimizer(groups, cfg.optim, lr)` over the parameter groups of `tunecv.finetune.param_groups`,
and MMPretrain's auto_scale_lr. Must not step."""

from __future__ import annotations

import logging
from typing import Any

import timm
import torch
from timm.optim import create_optimizer_v2, list_optimizers

from tunecv.config import OptimConfig, registries
from tunecv.errors import UserError

logger = logging.getLogger(__name__)

# MindCV's names that timm spells otherwise: MindCV's sgd and momentum are both SGD with momentum, Nesterov by
# use_nesterov (timm's own "sgd" is Nesterov's); every other name is timm's (tunecv.config.registries.OPTIMIZERS)
MINDCV = {"sgd": "momentum"}
OPTIMIZERS = frozenset(registries.OPTIMIZERS)
# timm's optimizers that run on CUDA only, by name prefix, and the package each needs
CUDA_ONLY = {"bnb": "bitsandbytes", "fused": "APEX (NVIDIA's apex)"}


def timm_name(cfg: OptimConfig) -> str:
    """timm's name for `cfg.opt`, UserError for a name tunecv cannot drive."""
    if cfg.opt in registries.REFUSED_OPTIMIZERS:
        raise UserError(f"optimizer {cfg.opt!r} cannot be used: {registries.REFUSED_OPTIMIZERS[cfg.opt]}; choose "
                        "another, e.g. adamw")
    if cfg.opt not in OPTIMIZERS:
        raise UserError(f"unknown optimizer {cfg.opt!r}; choose from the names in docs/config.md (opt), e.g. "
                        "adamw, sgd, lion")
    name = MINDCV.get(cfg.opt, cfg.opt)
    return "nesterov" if name == "momentum" and cfg.use_nesterov else name


def create_optimizer(groups: list[dict[str, Any]], cfg: OptimConfig, lr: float) -> torch.optim.Optimizer:
    """`groups` carry their own lr and weight_decay; `lr` is the base (scale 1) learning rate."""
    name = timm_name(cfg)
    if not any(g["params"] for g in groups):
        raise UserError("no trainable parameters: everything is frozen; check freeze and the freeze keys")
    _check_device(cfg.opt, groups)
    kwargs: dict[str, Any] = {}
    if cfg.eps is not None:
        kwargs["eps"] = cfg.eps
    if name not in list_optimizers():
        raise UserError(f"optimizer {cfg.opt!r} is not in the installed timm {timm.__version__}; pip install -U timm, "
                        "or choose another")
    optimizer = create_optimizer_v2(groups, opt=name, lr=lr, weight_decay=cfg.weight_decay,
                                    momentum=cfg.momentum, **kwargs)
    logger.debug("optimizer: %s lr %g, %d groups", type(optimizer).__name__, lr, len(groups))
    return optimizer


def _check_device(opt: str, groups: list[dict[str, Any]]) -> None:
    prefix = next((p for p in CUDA_ONLY if opt.startswith(p)), None)
    if prefix is None:
        return
    device = next(p for g in groups for p in g["params"]).device
    if device.type != "cuda":
        raise UserError(f"optimizer {opt!r} ({CUDA_ONLY[prefix]}) runs on CUDA only and this run is on {device.type}; "
                        "choose its plain form (e.g. adamw) or run on a GPU")


def base_lr(optimizer: torch.optim.Optimizer) -> float:
    """The current lr of scale 1 (groups hold lr x lr_scale): the number the user set and results.txt shows."""
    scaled = [g for g in optimizer.param_groups if g.get("lr_scale", 1.0) > 0]
    if not scaled:  # every group at lr_mult 0
        return 0.0
    return scaled[0]["lr"] / scaled[0].get("lr_scale", 1.0)


def auto_scaled_lr(lr: float, auto_scale_lr: dict[str, Any] | None, batch_size: int, accumulation: int,
                   world_size: int) -> float:
    """MMPretrain's linear scaling rule: lr x (batch_size x accumulation x world_size) / base_batch_size."""
    if not auto_scale_lr or not auto_scale_lr.get("enable", True):
        return lr
    effective = batch_size * accumulation * world_size
    scaled = lr * effective / auto_scale_lr["base_batch_size"]
    logger.info("auto_scale_lr: lr %g x %d / %d = %g", lr, effective, auto_scale_lr["base_batch_size"], scaled)
    return scaled
