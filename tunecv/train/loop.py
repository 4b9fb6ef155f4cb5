"""Fit: the run's epochs and phases; validation, checkpoints, results; resuming a stopped run exactly.

`tunecv.train.engine` runs the steps; this module decides when to validate, what is best, what `_last` holds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler
from torch.utils.data import DataLoader

from tunecv.train.engine import EpochProgress, EvalResult, NonFiniteLoss, Trainer, evaluate, train_one_epoch
from tunecv.train.resume import GracefulStop, RunStopped, batch_layout, random_state, restore_random_state
from tunecv.utils import distributed

if TYPE_CHECKING:
    from tunecv.config import TrainConfig
    from tunecv.finetune.phases import Plan
    from tunecv.report.results import ResultsWriter
    from tunecv.train.checkpoint import CheckpointSaver

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EpochMetrics:
    epoch: int
    lr: float
    train_loss: float
    val_loss: float | None
    top1: float | None
    top5: float | None
    time_s: float
    train_images_per_s: float
    eval_images_per_s: float | None
    ema_top1: float | None = None


@dataclass
class FitResult:
    history: list[EpochMetrics]
    best_epoch: int
    best_top1: float | None
    best_path: str
    last_path: str
    results_path: str
    elapsed_s: float
    ema: Best | None = None

    def summary(self) -> str:
        best = f"best top-1 {self.best_top1:.2f}% at epoch {self.best_epoch}" if self.best_top1 is not None \
            else f"no validation set; last epoch {self.best_epoch}"
        lines = [f"tunecv: {best}; {self.elapsed_s:.1f} s", f"  best checkpoint: {self.best_path}"]
        if self.ema is not None:
            ema = f"top-1 {self.ema.top1:.2f}% at epoch {self.ema.epoch}" if self.ema.top1 is not None \
                else f"epoch {self.ema.epoch}"
            lines.append(f"  EMA best ({ema}): {self.ema.path}")
        return "\n".join([*lines, f"  results: {self.results_path}"])


@dataclass
class Best:
    """The best validated epoch so far (without a validation set: the last epoch)."""

    top1: float | None = None
    epoch: int = 0
    path: str = ""

    def update(self, top1: float | None, epoch: int, no_val_set: bool) -> bool:
        if no_val_set or (top1 is not None and (self.top1 is None or top1 > self.top1)):
            self.top1, self.epoch = top1, epoch
            return True
        return False


def should_validate(epoch: int, epochs: int, cfg: TrainConfig) -> bool:
    return cfg.val_while_train and (epoch % cfg.val_interval == 0 or epoch == epochs)


@dataclass
class RunState:
    """Where a run stands: the next epoch (and how far into it), the rows reported, the best epochs."""

    epoch: int = 1
    progress: EpochProgress | None = None  # the epoch in progress when `_last` was written mid-epoch
    history: list[EpochMetrics] = field(default_factory=list)
    best: Best = field(default_factory=Best)
    ema_best: Best = field(default_factory=Best)

    def to_dict(self) -> dict[str, Any]:
        return {"history": [asdict(m) for m in self.history], "best": asdict(self.best),
                "ema_best": asdict(self.ema_best)}


@contextmanager
def _curves_drawn_on_exit(results: ResultsWriter | None) -> Iterator[None]:
    """A stopped or failed run's curves.png shows every row written (ResultsWriter spaces its drawings out), a
    diverging one above all."""
    try:
        yield
    except BaseException:
        if results is not None:
            with suppress(Exception):  # the run's own error is the one to report
                results.draw_curves()
        raise


def fit(model: nn.Module, train_loader: DataLoader, val_loader: DataLoader | None, plan: Plan, cfg: TrainConfig,
        saver: CheckpointSaver, results: ResultsWriter | None, trainer: Trainer,
        saved_model: nn.Module | None = None, resume: dict[str, Any] | None = None) -> FitResult:
    """Train `cfg.epoch_size` epochs; validate, checkpoint (`_last` every epoch and every `ckpt_save_steps`
    steps, `_best` on improvement), report. Each phase of `plan` (un)freezes layers and brings its own optimizer
    and schedule. `model` is what batches go through; `saved_model` (default: `model`) is what the checkpoints
    hold (the whole model when only its classifier trains on cached features). `resume`: a `_last` checkpoint
    to go on from. Distributed: every process runs this; only the first writes files (`results` None on the
    others). SIGTERM/SIGINT stop after the current step with `_last` written (RunStopped)."""
    start = time.perf_counter()
    saved_model = model if saved_model is None else saved_model
    state = RunState(best=Best(path=str(saver.best_path)))
    if resume is not None:
        state = _restore(resume, saved_model, plan, trainer, saver, results)
    device, wrapped, phase, skipped, signum = trainer.compute.device, model, None, trainer.skipped_steps, 0

    def training_state(progress: EpochProgress | None) -> dict[str, Any]:
        """Called on every process (it gathers their random states), used by the first."""
        return {**_training_state(plan.optimizer, plan.scheduler, trainer), **state.to_dict(),
                "epoch_progress": asdict(progress) if progress else None, "phase_start": plan.current.start,
                "layout": batch_layout(_batch_size(train_loader), trainer.accumulation_steps),
                "rng": distributed.gather(random_state())}

    with GracefulStop() as stop, _curves_drawn_on_exit(results):
        for epoch in range(state.epoch, cfg.epoch_size + 1):
            optimizer, scheduler = plan.enter(epoch)
            if plan.current is not phase:  # DDP hooks the parameters that train: wrap again when they change
                wrapped, phase = distributed.wrap(model, device), plan.current
            progress, state.progress = state.progress, None
            _start_epoch(train_loader, epoch, progress)

            def after_step(snapshot, last_step: bool, epoch=epoch) -> bool:
                nonlocal signum
                if last_step:  # the epoch's end saves and stops
                    return False
                signum = distributed.max_all(stop.signum or 0, device)
                stopping = signum > 0
                if stopping or (cfg.ckpt_save_steps and trainer.global_step % cfg.ckpt_save_steps == 0):
                    done = snapshot()
                    check_finite(saved_model, epoch, trainer.global_step)
                    extra = training_state(done)
                    if distributed.is_main():
                        saver.save_last(saved_model, epoch=epoch, metrics={}, best_top1=state.best.top1,
                                        training_state=extra)
                    logger.info("saved %s at epoch %d step %d", saver.last_path.name, epoch, trainer.global_step)
                return stopping

            epoch_start = time.perf_counter() - (progress.seconds if progress else 0.0)
            stats = train_one_epoch(wrapped, train_loader, optimizer, scheduler, trainer, epoch, progress, after_step)
            if not stats.finished:
                raise RunStopped(signum, saver.last_path, f"at epoch {epoch} step {trainer.global_step}")
            stats = _summed(stats, device)
            if trainer.skipped_steps > skipped:
                logger.warning("epoch %d: the AMP scaler skipped %d steps (fp16 overflow; it lowers its scale and "
                               "goes on)", epoch, trainer.skipped_steps - skipped)
            skipped = trainer.skipped_steps
            evaluation = ema_evaluation = None
            for synced in (model, trainer.ema.module if trainer.ema is not None else None):
                if synced is not None:  # what the checkpoints hold is what every process validates
                    distributed.sync_buffers(synced)
            if val_loader is not None and should_validate(epoch, cfg.epoch_size, cfg):
                evaluation = evaluate(model, val_loader, trainer.compute, trainer.num_classes, desc=f"val {epoch}")
                if trainer.ema is not None:  # the EMA is validated on its own and kept as its own best
                    ema_evaluation = evaluate(trainer.ema.module, val_loader, trainer.compute, trainer.num_classes,
                                              desc=f"val ema {epoch}")
            metrics = _epoch_metrics(epoch, stats, evaluation, time.perf_counter() - epoch_start, ema_evaluation)
            state.history.append(metrics)
            improved = state.best.update(metrics.top1, epoch, val_loader is None)
            if trainer.ema is not None and state.ema_best.update(metrics.ema_top1, epoch, val_loader is None) \
                    and distributed.is_main():
                ema_metrics = _metrics_dict(_epoch_metrics(epoch, stats, ema_evaluation, metrics.time_s))
                state.ema_best.path = str(saver.save_ema_best(trainer.ema.module, epoch=epoch, metrics=ema_metrics,
                                                              best_top1=state.ema_best.top1))
            check_finite(saved_model, epoch, trainer.global_step)
            extra = training_state(None)
            if distributed.is_main():
                saver.save(saved_model, epoch=epoch, metrics=_metrics_dict(metrics), is_best=improved,
                           best_top1=state.best.top1, training_state=extra)
                results.add(metrics)
            logger.info(_epoch_line(metrics))
            signum = distributed.max_all(stop.signum or 0, device)
            if signum and epoch < cfg.epoch_size:
                raise RunStopped(signum, saver.last_path, f"after epoch {epoch}")
    elapsed = time.perf_counter() - start
    ema_best = state.ema_best if trainer.ema is not None else None
    if results is not None:
        results.finish(state.best.top1, state.best.epoch, ema_best)
    return FitResult(history=state.history, best_epoch=state.best.epoch, best_top1=state.best.top1,
                     best_path=state.best.path, last_path=str(saver.last_path),
                     results_path=str(results.path) if results else "", elapsed_s=elapsed, ema=ema_best)


def check_finite(model: nn.Module, epoch: int, step: int) -> None:
    """No checkpoint of nan/inf weights replaces a good one: the run stops instead."""
    trained = [p.detach().isfinite().all() for p in model.parameters() if p.requires_grad]
    if trained and not torch.stack(trained).all():
        raise NonFiniteLoss(f"epoch {epoch} step {step}: the weights became nan/inf (the last checkpoint is kept); "
                            "lower lr or set clip_grad true")


def _start_epoch(loader: DataLoader, epoch: int, progress: EpochProgress | None) -> None:
    """The epoch's order (an EpochSampler's), from the first batch not yet trained on."""
    sampler = getattr(loader, "sampler", None)
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch, progress.batches * _batch_size(loader) if progress else 0)


def _batch_size(loader: DataLoader) -> int | None:
    """Images per batch of a DataLoader, FeatureLoader or DevicePrefetcher (None for a plain list of batches)."""
    return getattr(getattr(loader, "batch_sampler", None), "batch_size", None)


def _summed(stats: EpochProgress, device: torch.device) -> EpochProgress:
    """The epoch's totals over every process (the loss of the whole global batch, images/s of all GPUs)."""
    if not distributed.enabled():
        return stats
    loss_sum, images = distributed.sum_all([stats.loss_sum, stats.images], device)
    return EpochProgress(stats.batches, loss_sum, int(images), stats.lr, stats.seconds, stats.finished)


def _restore(checkpoint: dict[str, Any], saved_model: nn.Module, plan: Plan, trainer: Trainer,
             saver: CheckpointSaver, results: ResultsWriter | None) -> RunState:
    """Put a `_last` checkpoint's weights, optimizer, schedule, scaler, EMA, step, reported rows and random state
    back; the run goes on where it stopped."""
    saved_model.load_state_dict(checkpoint["model"])
    progress = checkpoint.get("epoch_progress")
    epoch = checkpoint["epoch"] if progress else checkpoint["epoch"] + 1
    state = RunState(epoch=epoch, progress=EpochProgress(**progress) if progress else None,
                     history=[EpochMetrics(**row) for row in checkpoint.get("history", [])],
                     best=Best(**checkpoint["best"]), ema_best=Best(**checkpoint["ema_best"]))
    optimizer, scheduler = plan.enter(epoch)
    # a `_last` written at a phase's end holds that phase's optimizer: the next phase starts afresh, as it would
    if checkpoint["phase_start"] == plan.current.start:
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
    trainer.global_step = checkpoint["global_step"]
    if trainer.scaler is not None and "scaler" in checkpoint:
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


def _training_state(optimizer: torch.optim.Optimizer, scheduler: LRScheduler, trainer: Trainer) -> dict[str, Any]:
    state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "global_step": trainer.global_step}
    if trainer.scaler is not None:
        state["scaler"] = trainer.scaler.state_dict()
    if trainer.ema is not None:
        state["model_ema"] = trainer.ema.module.state_dict()
    return state


def _epoch_metrics(epoch: int, stats: EpochProgress, evaluation: EvalResult | None, seconds: float,
                   ema_evaluation: EvalResult | None = None) -> EpochMetrics:
    return EpochMetrics(
        epoch=epoch, lr=stats.lr, train_loss=stats.loss,
        val_loss=evaluation.loss if evaluation else None, top1=evaluation.top1 if evaluation else None,
        top5=evaluation.top5 if evaluation else None, time_s=seconds,
        train_images_per_s=stats.images / max(stats.seconds, 1e-9),
        eval_images_per_s=evaluation.images / max(evaluation.seconds, 1e-9) if evaluation else None,
        ema_top1=ema_evaluation.top1 if ema_evaluation else None)


def _metrics_dict(metrics: EpochMetrics) -> dict[str, Any]:
    return {k: v for k, v in metrics.__dict__.items() if v is not None}


def _epoch_line(m: EpochMetrics) -> str:
    line = f"epoch {m.epoch}: lr {m.lr:.3g} train_loss {m.train_loss:.4f} ({m.train_images_per_s:.0f} img/s)"
    if m.top1 is not None:
        line += (f" | val_loss {m.val_loss:.4f} top1 {m.top1:.2f} top5 {m.top5:.2f}"
                 f" ({m.eval_images_per_s:.0f} img/s)")
    if m.ema_top1 is not None:
        line += f" | ema top1 {m.ema_top1:.2f}"
    return line + f" | {m.time_s:.1f} s"
