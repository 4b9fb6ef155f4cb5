"""Training plan: the run's phases (`tunecv.finetune.strategies`), each started with its trainable set,
parameter groups, optimizer and lr schedule. One phase for most runs; freeze_epochs, unfreeze_schedule and
gradual add more."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

from tunecv.finetune.param_groups import build_param_groups, group_table
from tunecv.finetune.strategies import Phase, apply_phase, plan_phases
from tunecv.models.factory import count_params
from tunecv.models.layer_map import LayerMap, layer_map
from tunecv.optim.optimizers import create_optimizer
from tunecv.optim.schedulers import create_scheduler

if TYPE_CHECKING:
    from tunecv.config import Config

logger = logging.getLogger(__name__)


@dataclass
class Plan:
    model: nn.Module
    cfg: Config
    lr: float
    steps_per_epoch: int
    lmap: LayerMap
    phases: list[Phase]
    table: str = ""
    trainable: int = 0
    current: Phase | None = None
    optimizer: torch.optim.Optimizer | None = None
    scheduler: LRScheduler | None = None

    @classmethod
    def create(cls, model: nn.Module, cfg: Config, lr: float, steps_per_epoch: int) -> Plan:
        lmap, ft = layer_map(model), cfg.finetune
        uses_stages = [k for k, on in (("strategy gradual", ft.strategy == "gradual"),
                                       ("frozen_stages", ft.frozen_stages >= 0),
                                       ("layer_decay", ft.layer_decay is not None)) if on]
        if uses_stages and len(lmap.stages) < 4:
            logger.warning("%s: %s splits into only %d stages (stem, body, head); the setting is coarse for it",
                           " and ".join(uses_stages), type(model).__name__, len(lmap.stages))
        return cls(model, cfg, lr, steps_per_epoch, lmap, plan_phases(model, lmap, ft, cfg.train.epoch_size))

    def enter(self, epoch: int) -> tuple[torch.optim.Optimizer, LRScheduler]:
        """The optimizer and scheduler for `epoch`, starting its phase when it begins there."""
        phase = next(p for p in self.phases if p.start <= epoch <= p.end)
        if phase is not self.current:
            self.start(phase)
        return self.optimizer, self.scheduler

    def reset(self) -> None:
        """Forget the started phase (after the LR range test used its optimizer)."""
        self.current = self.optimizer = self.scheduler = None

    def start(self, phase: Phase) -> tuple[torch.optim.Optimizer, LRScheduler]:
        """Freeze/unfreeze for `phase` and build its optimizer and scheduler (fresh optimizer state)."""
        apply_phase(self.model, phase)
        optim, ft = self.cfg.optim, self.cfg.finetune
        groups = build_param_groups(self.model, self.lmap, ft, lr=self.lr, weight_decay=optim.weight_decay,
                                    weight_decay_filter=optim.weight_decay_filter,
                                    discriminative=phase.discriminative)
        optimizer = create_optimizer(groups, optim, self.lr)
        # a restarting phase has a schedule of its own; the others continue the run's at their first step
        epochs, start_step = (phase.end - phase.start + 1, 0) if phase.restart else \
            (self.cfg.train.epoch_size, (phase.start - 1) * self.steps_per_epoch)
        scheduler = create_scheduler(optimizer, self.cfg.sched, lr=self.lr, steps_per_epoch=self.steps_per_epoch,
                                     epochs=epochs, start_step=start_step)
        self.table = group_table(self.model, groups)
        self.trainable = count_params(self.model)[0]
        self.current, self.optimizer, self.scheduler = phase, optimizer, scheduler
        if len(self.phases) > 1 and phase.start > 1:
            logger.info("epochs %d-%d (%s): %s trainable parameters\n%s", phase.start, phase.end,
                        phase.label or "phase", f"{self.trainable:,}", self.table)
        return optimizer, scheduler

    def describe(self) -> str:
        """The phases in words: what trains when."""
        if len(self.phases) == 1:
            frozen = len(self.phases[0].frozen)
            return f"{frozen} tensors frozen for the whole run" if frozen else "every layer trains"
        return "; ".join(f"epochs {p.start}-{p.end} {p.label}" for p in self.phases)
