"""Optimizer: `create_optimizer(model, cfg.optim)`; parameter groups (no decay on norm/bias). Must not step."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import torch
from timm.optim import create_optimizer_v2
from torch import nn

from tunecv.errors import UserError

if TYPE_CHECKING:
    from tunecv.config import OptimConfig

logger = logging.getLogger(__name__)

# our name → timm's name; MindCV's sgd and momentum are both SGD with momentum, Nesterov by use_nesterov.
OPTIMIZERS = {"sgd": "momentum", "momentum": "momentum", "adam": "adam", "adamw": "adamw",
              "rmsprop": "rmsprop", "adagrad": "adagrad", "nadam": "nadam", "lamb": "lamb"}


def param_groups(named_params: list[tuple[str, nn.Parameter]], weight_decay: float,
                 weight_decay_filter: str) -> list[dict[str, Any]]:
    """Trainable parameters in two groups: decayed, and (with a filter) 1-D tensors (norms, biases) undecayed.

    Frozen parameters (requires_grad False) are left out: no optimizer state for them.
    """
    trainable = [(name, p) for name, p in named_params if p.requires_grad]
    if weight_decay_filter == "disable" or weight_decay == 0:
        return [{"params": [p for _, p in trainable], "weight_decay": weight_decay}]
    decay = [p for name, p in trainable if p.ndim > 1 and not name.endswith(".bias")]
    no_decay = [p for name, p in trainable if p.ndim <= 1 or name.endswith(".bias")]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def create_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    if cfg.opt not in OPTIMIZERS:
        raise UserError(f"unknown optimizer {cfg.opt!r}; choose from {', '.join(sorted(OPTIMIZERS))}")
    groups = param_groups(list(model.named_parameters()), cfg.weight_decay, cfg.weight_decay_filter)
    if not groups or not any(g["params"] for g in groups):
        raise UserError("no trainable parameters: everything is frozen; check freeze")
    timm_name = OPTIMIZERS[cfg.opt]
    if timm_name == "momentum" and cfg.use_nesterov:
        timm_name = "nesterov"
    kwargs: dict[str, Any] = {}
    if cfg.eps is not None:
        kwargs["eps"] = cfg.eps
    optimizer = create_optimizer_v2(groups, opt=timm_name, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                    momentum=cfg.momentum, **kwargs)
    logger.info("optimizer: %s lr %g weight_decay %g (%s)%s", type(optimizer).__name__, cfg.lr, cfg.weight_decay,
                "all decayed" if len(groups) == 1 else "no decay on norm/bias",
                f" momentum {cfg.momentum}{' nesterov' if cfg.use_nesterov else ''}"
                if timm_name in ("momentum", "nesterov") else "")
    return optimizer
