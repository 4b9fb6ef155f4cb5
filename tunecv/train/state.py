"""The state of a run: the best epochs and rows so far, what `_last` holds besides the weights (optimizer, schedule,
scaler, EMA, step), and putting a `_last` back so the run goes on where it stopped."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

from tunecv.errors import UserError
from tunecv.finetune.phases import Plan
from tunecv.train.checkpoint import CheckpointSaver
from tunecv.train.engine import EpochProgress, Trainer
from tunecv.train.resume import restore_random_state
from tunecv.utils import distributed

logger = logging.getLogger(__name__)


class Replayable(Protocol):
    """What takes a resumed run's rows back (the run's results writer)."""

    def add(self, row: dict[str, Any], replayed: bool = False) -> None: ...


@dataclass
class Best:
    """The best validated epoch so far by `metric` (without a validation set: the last epoch)."""

    value: float | None = None
    epoch: int = 0
    path: str = ""

    def update(self, value: float | None, epoch: int, no_val_set: bool) -> bool:
        if no_val_set or (value is not None and (self.value is None or value > self.value)):
            self.value, self.epoch = value, epoch
            return True
        return False


@dataclass
class RunState:
    """Where a run stands: the next epoch (and how far into it), the rows reported, the best epochs."""

    epoch: int = 1
    progress: EpochProgress | None = None  # the epoch in progress when `_last` was written mid-epoch
    history: list[dict[str, Any]] = field(default_factory=list)
    best: Best = field(default_factory=Best)
    ema_best: Best = field(default_factory=Best)

    def to_dict(self) -> dict[str, Any]:
        return {"history": self.history, "best": asdict(self.best), "ema_best": asdict(self.ema_best)}


def saved_best(saved: dict[str, Any]) -> Best:
    """A Best from `_last` (earlier versions named its value `top1`)."""
    return Best(**{("value" if key == "top1" else key): value for key, value in saved.items()})


def restore(checkpoint: dict[str, Any], model: nn.Module, trainer: Trainer, plan: Plan, saver: CheckpointSaver,
            results: Replayable | None) -> RunState:
    """Put a `_last` checkpoint's weights, optimizer, schedule, scaler, EMA, step, reported rows and random state
    back; the run goes on where it stopped."""
    model.load_state_dict(checkpoint["model"])
    progress = checkpoint.get("epoch_progress")
    epoch = checkpoint["epoch"] if progress else checkpoint["epoch"] + 1
    state = RunState(epoch=epoch, progress=EpochProgress(**progress) if progress else None,
                     history=list(checkpoint["history"]), ema_best=saved_best(checkpoint["ema_best"]))
    state.best = best_so_far(state.history, checkpoint, saver)
    optimizer, scheduler = plan.enter(epoch)
    # a `_last` written at a phase's end holds that phase's optimizer: the next phase starts afresh, as it would
    if checkpoint["phase_start"] == plan.current.start:
        try:
            optimizer.load_state_dict(checkpoint["optimizer"])
        except ValueError:  # torch: "loaded state dict contains a parameter group that doesn't match ..."
            raise UserError("the resumed run trained other parameters (the freeze keys, frozen_stages, "
                            "trainable_backbone_layers, freeze_bn or weight_decay_filter changed); resume with the "
                            "run's own values, or start a new run with --ckpt_path <its _last.pth>") from None
        scheduler.load_state_dict(checkpoint["scheduler"])
    trainer.global_step = checkpoint["global_step"]
    if trainer.scaler is not None and checkpoint.get("scaler"):
        trainer.scaler.load_state_dict(checkpoint["scaler"])
    if trainer.ema is not None and "model_ema" in checkpoint:
        trainer.ema.module.load_state_dict(checkpoint["model_ema"])
    saver.kept = [(score, epoch_, Path(path)) for score, epoch_, path in checkpoint.get("kept", [])]
    if results is not None:
        for row in state.history:
            results.add(row, replayed=True)
    states = checkpoint["rng"]  # one per process
    restore_random_state(states[distributed.rank() % len(states)])
    where = f"epoch {epoch} step {trainer.global_step}" if progress else f"the start of epoch {epoch}"
    logger.info("resumed at %s (global step %d)", where, trainer.global_step)
    return state


def best_so_far(history: list[dict[str, Any]], checkpoint: dict[str, Any], saver: CheckpointSaver) -> Best:
    """The best epoch of the rows so far, by this run's metric (best_metric may have changed since)."""
    saved = saved_best(checkpoint["best"])
    scored = [row for row in history if row.get(saver.score_key) is not None]
    if not scored:
        return saved
    row = max(scored, key=lambda r: r[saver.score_key])
    return Best(row[saver.score_key], row["epoch"], saved.path or str(saver.best_path))


def training_state(optimizer: torch.optim.Optimizer, scheduler: LRScheduler, trainer: Trainer) -> dict[str, Any]:
    state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "global_step": trainer.global_step}
    if trainer.scaler is not None:
        state["scaler"] = trainer.scaler.state_dict()
    if trainer.ema is not None:
        state["model_ema"] = trainer.ema.module.state_dict()
    return state
