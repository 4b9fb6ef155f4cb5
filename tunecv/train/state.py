"""The state of a run: the best epochs and rows so far, what `_last` holds besides the weights (optimizer, schedule,
scaler, EMA, step), and putting a `_last` back so the run goes on where it stopped."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR, LRScheduler

from tunecv.errors import UserError
from tunecv.finetune.phases import Plan
from tunecv.train.checkpoint import CheckpointSaver
from tunecv.train.engine import EpochProgress, Trainer
from tunecv.train.resume import restore_random_state
from tunecv.utils import distributed

logger = logging.getLogger(__name__)


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


def start_state(checkpoint: dict[str, Any] | None, model: nn.Module, trainer: Trainer, plan: Plan,
                saver: CheckpointSaver) -> RunState:
    """A new run at its first epoch, or a resumed one where its `_last` stopped (writes nothing: a resume that
    fails here leaves the run folder as it was)."""
    if checkpoint is None:
        plan.enter(1)
        return RunState(best=Best(path=str(saver.best_path)))
    return restore(checkpoint, model, trainer, plan, saver)


def restore(checkpoint: dict[str, Any], model: nn.Module, trainer: Trainer, plan: Plan,
            saver: CheckpointSaver) -> RunState:
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
        _follow_schedule(optimizer, scheduler)
    trainer.global_step = checkpoint["global_step"]
    if trainer.scaler is not None and checkpoint.get("scaler"):
        trainer.scaler.load_state_dict(checkpoint["scaler"])
    if trainer.ema is not None and "model_ema" in checkpoint:
        trainer.ema.module.load_state_dict(checkpoint["model_ema"])
    saver.kept = [(score, epoch_, Path(path)) for score, epoch_, path in checkpoint.get("kept", [])]
    states = checkpoint["rng"]  # one per process
    restore_random_state(states[distributed.rank() % len(states)])
    where = f"epoch {epoch} step {trainer.global_step}" if progress else f"the start of epoch {epoch}"
    logger.info("resumed at %s (global step %d)", where, trainer.global_step)
    _log_extension(checkpoint, plan, epoch, optimizer)
    return state


def _follow_schedule(optimizer: torch.optim.Optimizer, scheduler: LRScheduler) -> None:
    """The lr of the step to come, by this run's schedule: the checkpoint's optimizer holds the one its own schedule
    set, which differs when the run is extended (the same value otherwise)."""
    if isinstance(scheduler, LambdaLR):
        for group, base, factor in zip(optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
            group["lr"] = base * factor(scheduler.last_epoch)


def _log_extension(checkpoint: dict[str, Any], plan: Plan, epoch: int, optimizer: torch.optim.Optimizer) -> None:
    planned, epochs = checkpoint["config"].get("epoch_size"), plan.phases[-1].end
    if planned is not None and epochs != planned:
        logger.info("%s the run from %d to %d epochs: the schedule is planned again over %d epochs, as timm's "
                    "train.py does, and goes on from its step at epoch %d (lr %.3g)",
                    "extending" if epochs > planned else "shortening", planned, epochs, epochs, epoch,
                    optimizer.param_groups[0]["lr"])


def trained_epochs(checkpoint: dict[str, Any]) -> int:
    """The epochs a `_last` has finished (one written mid-epoch is inside the next)."""
    return checkpoint["epoch"] - 1 if checkpoint.get("epoch_progress") else checkpoint["epoch"]


def check_epochs_left(checkpoint: dict[str, Any], epoch_size: int, path: Path) -> None:
    """A resume with no epoch left to train ends here, before anything is written: RunFinished when the run has
    trained exactly `epoch_size` epochs, a UserError when more."""
    done = trained_epochs(checkpoint)
    if done < epoch_size:
        return
    if done > epoch_size or checkpoint.get("epoch_progress"):
        trained = f"{done} epochs" + (f" and part of epoch {done + 1}" if checkpoint.get("epoch_progress") else "")
        raise UserError(f"{path} has trained {trained}, more than epoch_size {epoch_size}; pass --epoch_size "
                        f"{done + 1} or more to train it further, or leave out --resume to start a new run")
    best = best_words(checkpoint["config"].get("best_metric", "top1"), saved_best(checkpoint["best"]))
    raise RunFinished(f"the run in {path.parent} finished at epoch {done}{best}; nothing to resume: to train "
                      f"further, add --epoch_size N (more than {done}) to the command")


class RunFinished(Exception):
    """Resuming a run that has trained every epoch asked of it: nothing to do (exit 0, the folder untouched)."""


def best_words(metric: str, best: Best) -> str:
    """", best top-1 98.33 % at epoch 2" (empty without a validated epoch)."""
    if best.value is None:
        return ""
    name, unit = ("top-1", " %") if metric == "top1" else (metric, "")
    return f", best {name} {best.value:.2f}{unit} at epoch {best.epoch}"


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
