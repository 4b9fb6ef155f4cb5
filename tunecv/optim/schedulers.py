"""Scheduler: `create_scheduler(optimizer, cfg.sched, steps_per_epoch, epochs)`: warm-up + decay, stepped per update.

The math is `lr_factor`, a pure function of the step; the torch LambdaLR only applies it to every group.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
from torch.optim.lr_scheduler import LambdaLR

from tunecv.config import SchedConfig
from tunecv.config.registries import SCHEDULERS
from tunecv.errors import UserError

logger = logging.getLogger(__name__)



@dataclass(frozen=True)
class Schedule:
    """A schedule in optimizer steps; `floor` is min_lr / lr."""

    name: str
    total_steps: int
    warmup_steps: int
    steps_per_epoch: int
    floor: float = 0.0
    warmup_factor: float = 0.0
    decay_steps: int = 0
    decay_rate: float = 0.1
    milestones: tuple[int, ...] = ()
    stair: bool = False
    num_cycles: int = 1
    cycle_decay: float = 1.0


def lr_factor(step: int, s: Schedule) -> float:
    """Multiplier of the peak lr at optimizer step `step` (0-based)."""
    if s.stair:  # MindCV lr_epoch_stair: one value per epoch, taken at its first step
        step = (step // s.steps_per_epoch) * s.steps_per_epoch
    if step < s.warmup_steps:
        return s.warmup_factor + (1.0 - s.warmup_factor) * (step + 1) / s.warmup_steps
    after = step - s.warmup_steps
    epoch_after = after / s.steps_per_epoch
    if s.name == "constant":
        return 1.0
    if s.name == "cosine_decay":
        cycle_len = max(1, s.decay_steps) / s.num_cycles
        cycle = min(int(after // cycle_len), s.num_cycles - 1)
        t = min(1.0, (after - cycle * cycle_len) / cycle_len)
        peak = s.cycle_decay**cycle
        return s.floor + (peak - s.floor) * 0.5 * (1.0 + math.cos(math.pi * t))
    if s.name == "polynomial_decay":
        t = min(1.0, after / max(1, s.decay_steps))
        return s.floor + (1.0 - s.floor) * (1.0 - t) ** s.decay_rate
    decay_epochs = max(1, s.decay_steps) / s.steps_per_epoch
    if s.name == "step_decay":
        return s.decay_rate ** math.floor(epoch_after / decay_epochs)
    if s.name == "exponential_decay":
        return s.decay_rate ** (epoch_after / decay_epochs)
    if s.name == "multi_step_decay":
        epoch = step / s.steps_per_epoch
        return s.decay_rate ** sum(1 for m in s.milestones if epoch >= m)
    raise UserError(f"unknown scheduler {s.name!r}; choose from {', '.join(SCHEDULERS)}")


def build_schedule(cfg: SchedConfig, lr: float, steps_per_epoch: int, epochs: int) -> Schedule:
    if cfg.scheduler not in SCHEDULERS:
        raise UserError(f"unknown scheduler {cfg.scheduler!r}; choose from {', '.join(SCHEDULERS)}")
    total = steps_per_epoch * epochs
    warmup_steps = cfg.warmup_iters if cfg.warmup_iters is not None else round(cfg.warmup_epochs * steps_per_epoch)
    warmup = min(total, warmup_steps)
    if cfg.decay_epochs is not None:
        decay = round(cfg.decay_epochs * steps_per_epoch)
    else:
        decay = total - warmup
    return Schedule(name=cfg.scheduler, total_steps=total, warmup_steps=warmup, steps_per_epoch=steps_per_epoch,
                    floor=min(1.0, cfg.min_lr / lr) if lr > 0 else 0.0, warmup_factor=cfg.warmup_factor,
                    decay_steps=max(1, decay), decay_rate=cfg.decay_rate,
                    milestones=tuple(cfg.multi_step_decay_milestones), stair=cfg.lr_epoch_stair,
                    num_cycles=cfg.num_cycles, cycle_decay=cfg.cycle_decay)


def create_scheduler(optimizer: torch.optim.Optimizer, cfg: SchedConfig, *, lr: float, steps_per_epoch: int,
                     epochs: int, start_step: int = 0) -> LambdaLR:
    """A LambdaLR stepped once per optimizer update (after `optimizer.step()`); each group's lr is its own peak.
    `start_step`: continue a schedule at this step (an optimizer rebuilt mid-run when layers unfreeze)."""
    schedule = build_schedule(cfg, lr, steps_per_epoch, epochs)
    if start_step == 0:
        logger.info("scheduler: %s, %d steps (%d/epoch), warm-up %d steps, min_lr %g", schedule.name,
                    schedule.total_steps, steps_per_epoch, schedule.warmup_steps, cfg.min_lr)
    return LambdaLR(optimizer, lambda step: lr_factor(step + start_step, schedule))
