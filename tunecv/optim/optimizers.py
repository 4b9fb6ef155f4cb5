"""Optimizer: `create_optimizer(groups, cfg.optim, lr)` over the parameter groups of `tunecv.finetune.param_groups`,
and MMPretrain's auto_scale_lr. Must not step."""

from __future__ import annotations

import logging
from typing import Any

import torch
from timm.optim import create_optimizer_v2

from tunecv.config import OptimConfig
from tunecv.errors import UserError

logger = logging.getLogger(__name__)

# our name → timm's name; MindCV's sgd and momentum are both SGD with momentum, Nesterov by use_nesterov.
OPTIMIZERS = {"sgd": "momentum", "momentum": "momentum", "adam": "adam", "adamw": "adamw",
              "rmsprop": "rmsprop", "adagrad": "adagrad", "nadam": "nadam", "lamb": "lamb"}


def create_optimizer(groups: list[dict[str, Any]], cfg: OptimConfig, lr: float) -> torch.optim.Optimizer:
    """`groups` carry their own lr and weight_decay; `lr` is the base (scale 1) learning rate."""
    if cfg.opt not in OPTIMIZERS:
        raise UserError(f"unknown optimizer {cfg.opt!r}; choose from {', '.join(sorted(OPTIMIZERS))}")
    if not any(g["params"] for g in groups):
        raise UserError("no trainable parameters: everything is frozen; check freeze and the freeze keys")
    timm_name = OPTIMIZERS[cfg.opt]
    if timm_name == "momentum" and cfg.use_nesterov:
        timm_name = "nesterov"
    kwargs: dict[str, Any] = {}
    if cfg.eps is not None:
        kwargs["eps"] = cfg.eps
    optimizer = create_optimizer_v2(groups, opt=timm_name, lr=lr, weight_decay=cfg.weight_decay,
                                    momentum=cfg.momentum, **kwargs)
    logger.debug("optimizer: %s lr %g, %d groups", type(optimizer).__name__, lr, len(groups))
    return optimizer


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
