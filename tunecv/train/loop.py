"""The train loop every task shares: epochs and phases, validation, `<model>_best` by the run's metric, `_last`
(every epoch and every `ckpt_save_steps` steps, with all a resume needs), results; resuming a stopped run exactly.

The task (`Trainable`) trains one epoch, evaluates and writes its rows; this module decides when to validate, what
is best and what `_last` holds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler
from torch.utils.data import DataLoader, Dataset

from tunecv.config import TrainConfig
from tunecv.finetune.phases import Plan, best_before_unfreeze
from tunecv.report.results import epoch_line
from tunecv.train.checkpoint import CheckpointSaver
from tunecv.train.engine import EpochProgress, NonFiniteLoss, Trainer
from tunecv.train.resume import GracefulStop, RunStopped, batch_layout, random_state
from tunecv.train.state import Best, RunState, training_state
from tunecv.utils import distributed

logger = logging.getLogger(__name__)


@dataclass
class Pipeline:
    """What the entry script builds for the loop: `model` is what the checkpoints hold, `forward_model` what
    batches go through (the model, or its trained part on cached features)."""

    model: nn.Module
    forward_model: nn.Module
    train_set: Dataset
    val_set: Dataset | None
    train_loader: DataLoader
    val_loader: DataLoader | None
    trainer: Trainer
    weights: str  # where the initial weights came from, in words
    fingerprint: str  # the data's (a resumed run must be trained on the same)


class Trainable(Protocol):
    """What the loop asks of a task (`tunecv.tasks.base.Task` has it all)."""

    def train_one_epoch(self, model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer,
                        scheduler: LRScheduler, trainer: Trainer, epoch: int, progress: EpochProgress | None,
                        after_step: Callable) -> EpochProgress: ...

    def evaluate(self, model: nn.Module, loader: DataLoader, trainer: Trainer, desc: str) -> dict[str, Any]: ...

    def row(self, epoch: int, stats: EpochProgress, scores: dict[str, Any] | None, seconds: float) -> dict[str, Any]:
        ...


class Results(Protocol):
    """results.txt and its companions (metrics.json/csv, curves.png, TensorBoard) of a run."""

    path: Path

    def add(self, row: dict[str, Any], replayed: bool = False) -> None: ...

    def draw_curves(self) -> None: ...

    def finish(self, best: float | None, epoch: int, ema: tuple[float | None, int] | None = None) -> None: ...


@dataclass
class FitResult:
    metric: str
    history: list[dict[str, Any]]
    best: Best
    last_path: str
    results_path: str
    elapsed_s: float
    ema: Best | None = None
    phase_note: str = ""

    def summary(self) -> str:
        name = "top-1" if self.metric == "top1" else self.metric
        unit = "%" if self.metric == "top1" else ""
        best = f"best {name} {self.best.value:.2f}{unit} at epoch {self.best.epoch}" if self.best.value is not None \
            else f"no validation set; last epoch {self.best.epoch}"
        lines = [f"tunecv: {best}; {self.elapsed_s:.1f} s", f"  best checkpoint: {self.best.path}"]
        if self.ema is not None:
            ema = f"{name} {self.ema.value:.2f}{unit} at epoch {self.ema.epoch}" if self.ema.value is not None \
                else f"epoch {self.ema.epoch}"
            lines.append(f"  EMA best ({ema}): {self.ema.path}")
        if self.phase_note:
            lines.append(self.phase_note)
        return "\n".join([*lines, f"  results: {self.results_path}"])


def should_validate(epoch: int, epochs: int, cfg: TrainConfig) -> bool:
    return cfg.val_while_train and (epoch % cfg.val_interval == 0 or epoch == epochs)


@contextmanager
def _curves_drawn_on_exit(results: Results | None) -> Iterator[None]:
    """A stopped or failed run's curves.png shows every row written (the writer spaces its drawings out), a
    diverging one above all."""
    try:
        yield
    except BaseException:
        if results is not None:
            with suppress(Exception):  # the run's own error is the one to report
                results.draw_curves()
        raise


EpochHook = Callable[[dict[str, Any]], None]


def fit(task: Trainable, pipeline: Pipeline, plan: Plan, cfg: TrainConfig, saver: CheckpointSaver,
        results: Results | None, state: RunState, on_epoch: EpochHook | None = None) -> FitResult:
    """Train from `state` (a new run's first epoch, or where a resumed one stopped) to `cfg.epoch_size`;
    validate, checkpoint, report. Each phase of `plan` (un)freezes layers and brings its own optimizer and schedule.
    Distributed: every process runs this; only the first writes files (`results` None on the others).
    SIGTERM/SIGINT stop after the current step with `_last` written (RunStopped). `on_epoch` sees each epoch's row
    once it is saved (a recipe search prunes there by raising)."""
    start = time.perf_counter()
    trainer = pipeline.trainer
    device, wrapped, phase, signum = trainer.compute.device, pipeline.forward_model, None, 0
    skipped = trainer.skipped_steps
    records = _Records(task, pipeline, plan, cfg, saver, results, state)

    with GracefulStop() as stop, _curves_drawn_on_exit(results):
        for epoch in range(state.epoch, cfg.epoch_size + 1):
            optimizer, scheduler = plan.enter(epoch)
            if plan.current is not phase:  # DDP hooks the parameters that train: wrap again when they change
                wrapped, phase = distributed.wrap(pipeline.forward_model, device), plan.current
            progress, state.progress = state.progress, None
            _start_epoch(pipeline.train_loader, epoch, progress)

            def after_step(snapshot, last_step: bool, epoch=epoch) -> bool:
                nonlocal signum
                if last_step:  # the epoch's end saves and stops
                    return False
                signum = distributed.max_all(stop.signum or 0, device)
                stopping = signum > 0
                if stopping or (cfg.ckpt_save_steps and trainer.global_step % cfg.ckpt_save_steps == 0):
                    records.save_last(epoch, snapshot())
                return stopping

            epoch_start = time.perf_counter() - (progress.seconds if progress else 0.0)
            stats = task.train_one_epoch(wrapped, pipeline.train_loader, optimizer, scheduler, trainer, epoch,
                                         progress, after_step)
            if not stats.finished:
                raise RunStopped(signum, saver.last_path, f"at epoch {epoch} step {trainer.global_step}")
            stats = _summed(stats, device)
            if trainer.skipped_steps > skipped:
                logger.warning("epoch %d: the AMP scaler skipped %d steps (fp16 overflow; it lowers its scale and "
                               "goes on)", epoch, trainer.skipped_steps - skipped)
            skipped = trainer.skipped_steps
            row = records.end_epoch(epoch, stats, epoch_start)
            if on_epoch is not None:
                on_epoch(row)
            signum = distributed.max_all(stop.signum or 0, device)
            if signum and epoch < cfg.epoch_size:
                raise RunStopped(signum, saver.last_path, f"after epoch {epoch}")
    ema_best = state.ema_best if trainer.ema is not None else None
    if results is not None:
        results.finish(state.best.value, state.best.epoch,
                       (ema_best.value, ema_best.epoch) if ema_best is not None else None)
    note = best_before_unfreeze(plan.phases, state.history, state.best.epoch, cfg.best_metric)
    return FitResult(cfg.best_metric, state.history, state.best, str(saver.last_path),
                     str(results.path) if results else "", time.perf_counter() - start, ema_best, note)


@dataclass
class _Records:
    """What fit keeps of a run as it goes: the epochs' rows, `_last` (with all a resume needs), `_best` and the
    EMA's best, results (files on the first process only)."""

    task: Trainable
    pipeline: Pipeline
    plan: Plan
    cfg: TrainConfig
    saver: CheckpointSaver
    results: Results | None
    state: RunState

    def last_state(self, progress: EpochProgress | None) -> dict[str, Any]:
        """Called on every process (it gathers their random states), used by the first."""
        plan, trainer = self.plan, self.pipeline.trainer
        return {**training_state(plan.optimizer, plan.scheduler, trainer), **self.state.to_dict(),
                "epoch_progress": asdict(progress) if progress else None, "phase_start": plan.current.start,
                "layout": batch_layout(_batch_size(self.pipeline.train_loader), trainer.accumulation_steps),
                "rng": distributed.gather(random_state())}

    def save_last(self, epoch: int, progress: EpochProgress) -> None:
        """`_last` in the middle of an epoch (`progress`: its totals so far)."""
        model, step = self.pipeline.model, self.pipeline.trainer.global_step
        check_finite(model, epoch, step)
        extra = self.last_state(progress)
        if distributed.is_main():
            self.saver.save_last(model, epoch=epoch, metrics={}, best_top1=self.state.best.value,
                                 training_state=extra)
        logger.info("saved %s at epoch %d step %d", self.saver.last_path.name, epoch, step)

    def end_epoch(self, epoch: int, stats: EpochProgress, epoch_start: float) -> dict[str, Any]:
        """The epoch's row, validated, kept, saved with `_last` (and `_best` when it improves), written and logged."""
        task, pipeline, cfg, saver, state = self.task, self.pipeline, self.cfg, self.saver, self.state
        trainer, metric = pipeline.trainer, cfg.best_metric
        row, ema_scores = _validated_row(task, pipeline, epoch, stats, cfg, epoch_start)
        state.history.append(row)
        no_val_set = pipeline.val_loader is None
        improved = state.best.update(row.get(metric), epoch, no_val_set)
        if trainer.ema is not None and state.ema_best.update(row.get(f"ema_{metric}"), epoch, no_val_set) \
                and distributed.is_main():
            ema_row = task.row(epoch, stats, ema_scores, row["time_s"])
            state.ema_best.path = str(saver.save_ema_best(trainer.ema.module, epoch=epoch, metrics=_measured(ema_row),
                                                          best_top1=state.ema_best.value))
        check_finite(pipeline.model, epoch, trainer.global_step)
        extra = self.last_state(None)
        if distributed.is_main():
            saver.save(pipeline.model, epoch=epoch, metrics=_measured(row), is_best=improved,
                       best_top1=state.best.value, training_state=extra)
            self.results.add(row)
        logger.info(epoch_line(row))
        return row


def _validated_row(task: Trainable, pipeline: Pipeline, epoch: int, stats: EpochProgress, cfg: TrainConfig,
                   epoch_start: float) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The epoch's row, with its validation scores (and the EMA weights' `ema_<metric>`) when it validates."""
    trainer = pipeline.trainer
    for synced in (pipeline.forward_model, trainer.ema.module if trainer.ema is not None else None):
        if synced is not None:  # what the checkpoints hold is what every process validates
            distributed.sync_buffers(synced)
    scores = ema_scores = None
    if pipeline.val_loader is not None and should_validate(epoch, cfg.epoch_size, cfg):
        scores = task.evaluate(pipeline.forward_model, pipeline.val_loader, trainer, f"val {epoch}")
        if trainer.ema is not None:  # the EMA is validated on its own and kept as its own best
            ema_scores = task.evaluate(trainer.ema.module, pipeline.val_loader, trainer, f"val ema {epoch}")
    row = task.row(epoch, stats, scores, time.perf_counter() - epoch_start)  # the epoch's time: validation too
    if trainer.ema is not None:
        row[f"ema_{cfg.best_metric}"] = ema_scores.get(cfg.best_metric) if ema_scores else None
    return row, ema_scores


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
    names = list(stats.part_sums)
    loss_sum, images, *parts = distributed.sum_all([stats.loss_sum, stats.images,
                                                    *(stats.part_sums[n] for n in names)], device)
    return EpochProgress(stats.batches, loss_sum, int(images), stats.lr, stats.seconds, stats.finished,
                         dict(zip(names, parts)))


def _measured(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if v is not None}
