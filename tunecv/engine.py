"""Engine: `train_one_epoch`, `evaluate`, `fit`; AMP, accumulation, clipping, EMA, progress bars, metrics.

Must not parse config files or print (progress goes through tqdm, facts through logging).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from timm.data import Mixup
from timm.utils import ModelEmaV3
from torch import nn
from torch.optim.lr_scheduler import LRScheduler
from torch.utils.data import DataLoader
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from tunecv.losses import create_loss
from tunecv.models import set_train_mode
from tunecv.optim import base_lr
from tunecv.runtime import Compute

if TYPE_CHECKING:
    from tunecv.checkpoint import CheckpointSaver
    from tunecv.config import TrainConfig
    from tunecv.plan import Plan
    from tunecv.report import ResultsWriter

logger = logging.getLogger(__name__)


@dataclass
class Trainer:
    """What one optimizer step needs besides the batch; built once by `create_trainer`."""

    loss_fn: Callable
    compute: Compute
    num_classes: int
    accumulation_steps: int = 1
    clip_norm: float | None = None
    mixup: Mixup | None = None
    ema: ModelEmaV3 | None = None
    scaler: torch.amp.GradScaler | None = None
    log_interval: int = 100
    freeze_bn: bool = True
    global_step: int = 0


def create_trainer(model: nn.Module, cfg: TrainConfig, compute: Compute, mixup: Mixup | None,
                   class_counts: list[int], freeze_bn: bool = True) -> Trainer:
    """The model must already be on its device (the EMA copies it). `class_counts`: training images per class."""
    ema = ModelEmaV3(model, decay=cfg.ema_decay, use_warmup=True) if cfg.ema else None
    loss_fn = create_loss(cfg, mixup is not None, class_counts).to(compute.device)
    return Trainer(loss_fn=loss_fn, compute=compute, num_classes=len(class_counts),
                   accumulation_steps=cfg.gradient_accumulation_steps,
                   clip_norm=cfg.clip_value if cfg.clip_grad else None, mixup=mixup, ema=ema,
                   scaler=compute.scaler(), log_interval=cfg.log_interval, freeze_bn=freeze_bn)


@dataclass(frozen=True)
class TrainStats:
    loss: float
    lr: float
    images: int
    seconds: float


def optimizer_steps(num_batches: int, accumulation_steps: int) -> int:
    return math.ceil(num_batches / accumulation_steps)


def train_one_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer, scheduler: LRScheduler,
                    trainer: Trainer, epoch: int) -> TrainStats:
    """One pass over `loader`; the scheduler steps after every optimizer update."""
    set_train_mode(model, keep_frozen_eval=trainer.freeze_bn)
    device = trainer.compute.device
    params = [p for g in optimizer.param_groups for p in g["params"]]
    loss_sum = torch.zeros((), device=device)
    images, start, lr = 0, time.perf_counter(), base_lr(optimizer)
    optimizer.zero_grad(set_to_none=True)
    bar = tqdm(loader, desc=f"train {epoch}", leave=False, disable=None, dynamic_ncols=True)
    pending = False  # gradients accumulated since the last optimizer step
    for step, batch in enumerate(bar, start=1):
        if batch is not None:  # None: every image of the batch failed to decode and was skipped
            loss, count = batch_loss(model, batch, trainer)
            backward(loss / trainer.accumulation_steps, trainer)
            loss_sum += loss.detach() * count
            images += count
            pending = True
        if pending and (step % trainer.accumulation_steps == 0 or step == len(loader)):
            lr = base_lr(optimizer)
            optimizer_step(optimizer, params, trainer)
            scheduler.step()
            trainer.global_step += 1
            pending = False
            if trainer.ema is not None:
                trainer.ema.update(model, step=trainer.global_step)
        if images and (step % trainer.log_interval == 0 or step == len(loader)):
            # .item() syncs with the device: only at the log interval
            rate = images / max(time.perf_counter() - start, 1e-9)
            bar.set_postfix(loss=f"{loss_sum.item() / images:.4f}", lr=f"{lr:.3g}", img_s=f"{rate:.0f}")
    loss_value = loss_sum.item() / max(images, 1)
    if not math.isfinite(loss_value):
        logger.warning("epoch %d: training loss is %s; lower lr", epoch, loss_value)
    return TrainStats(loss=loss_value, lr=lr, images=images, seconds=time.perf_counter() - start)


def batch_loss(model: nn.Module, batch: tuple, trainer: Trainer) -> tuple[torch.Tensor, int]:
    """The training loss of one (images, labels, ...) batch: on the device, mixed, under autocast; and its size."""
    inputs, targets = trainer.compute.inputs(batch[0]), batch[1].to(trainer.compute.device, non_blocking=True)
    if trainer.mixup is not None:
        inputs, targets = trainer.mixup(inputs, targets)
    with trainer.compute.autocast():
        return trainer.loss_fn(model(inputs), targets), inputs.shape[0]


def backward(loss: torch.Tensor, trainer: Trainer) -> None:
    (trainer.scaler.scale(loss) if trainer.scaler else loss).backward()


def optimizer_step(optimizer: torch.optim.Optimizer, params: list[torch.Tensor], trainer: Trainer) -> None:
    """Unscale (fp16), clip, step, zero the gradients."""
    if trainer.scaler is not None:
        trainer.scaler.unscale_(optimizer)
    if trainer.clip_norm is not None:
        torch.nn.utils.clip_grad_norm_(params, trainer.clip_norm)
    if trainer.scaler is not None:
        trainer.scaler.step(optimizer)
        trainer.scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)


@dataclass
class EvalResult:
    loss: float
    top1: float
    top5: float
    topk: int
    images: int
    seconds: float
    predictions: list[int] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    targets: list[int] = field(default_factory=list)
    indices: list[int] = field(default_factory=list)  # dataset index of each prediction


@torch.inference_mode()
def evaluate(model: nn.Module, loader: DataLoader, compute: Compute, num_classes: int, *,
             desc: str = "eval") -> EvalResult:
    """Loss (plain cross-entropy), top-1 and top-k (k = min(5, num_classes)) in percent, and per-image predictions."""
    model.eval()
    device, k = compute.device, min(5, num_classes)
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    preds, scores, labels, indices, correct_k = [], [], [], [], 0
    start = time.perf_counter()
    for batch in tqdm(loader, desc=desc, leave=False, disable=None, dynamic_ncols=True):
        if batch is None:
            continue
        inputs, targets = compute.inputs(batch[0]), batch[1].to(device, non_blocking=True)
        # datasets return (image, label, index): the index keeps predictions tied to files when one is skipped
        indices.extend(batch[2].tolist() if len(batch) > 2 else range(len(indices), len(indices) + len(targets)))
        with compute.autocast():
            logits = model(inputs)
        logits = logits.float()
        loss_sum += nn.functional.cross_entropy(logits, targets, reduction="sum").double()
        probs = logits.softmax(dim=1)
        top = probs.topk(k, dim=1)
        correct_k += (top.indices == targets[:, None]).any(dim=1).sum().item()
        preds.extend(top.indices[:, 0].tolist())
        scores.extend(top.values[:, 0].tolist())
        labels.extend(targets.tolist())
    count = len(labels)
    correct1 = sum(int(p == t) for p, t in zip(preds, labels))
    return EvalResult(loss=loss_sum.item() / max(count, 1), top1=100.0 * correct1 / max(count, 1),
                      top5=100.0 * correct_k / max(count, 1), topk=k, images=count,
                      seconds=time.perf_counter() - start, predictions=preds, scores=scores, targets=labels,
                      indices=indices)


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


def _should_validate(epoch: int, epochs: int, cfg: TrainConfig) -> bool:
    return cfg.val_while_train and (epoch % cfg.val_interval == 0 or epoch == epochs)


def fit(model: nn.Module, train_loader: DataLoader, val_loader: DataLoader | None, plan: Plan, cfg: TrainConfig,
        saver: CheckpointSaver, results: ResultsWriter, trainer: Trainer, saved_model: nn.Module | None = None
        ) -> FitResult:
    """Train `cfg.epoch_size` epochs; validate, checkpoint (`_last` every epoch, `_best` on improvement), report.
    Each phase of `plan` (un)freezes layers and brings its own optimizer and schedule. `model` is what batches
    go through; `saved_model` (default: `model`) is what the checkpoints hold (the whole model when only its
    classifier trains on cached features)."""
    start = time.perf_counter()
    saved_model = model if saved_model is None else saved_model
    history: list[EpochMetrics] = []
    best, ema_best = Best(path=str(saver.best_path)), Best()
    with logging_redirect_tqdm():
        for epoch in range(1, cfg.epoch_size + 1):
            optimizer, scheduler = plan.enter(epoch)
            epoch_start = time.perf_counter()
            stats = train_one_epoch(model, train_loader, optimizer, scheduler, trainer, epoch)
            evaluation = ema_evaluation = None
            if val_loader is not None and _should_validate(epoch, cfg.epoch_size, cfg):
                evaluation = evaluate(model, val_loader, trainer.compute, trainer.num_classes, desc=f"val {epoch}")
                if trainer.ema is not None:  # the EMA is validated on its own and kept as its own best
                    ema_evaluation = evaluate(trainer.ema.module, val_loader, trainer.compute, trainer.num_classes,
                                              desc=f"val ema {epoch}")
            metrics = _epoch_metrics(epoch, stats, evaluation, time.perf_counter() - epoch_start, ema_evaluation)
            history.append(metrics)
            improved = best.update(metrics.top1, epoch, val_loader is None)
            saver.save(saved_model, epoch=epoch, metrics=_metrics_dict(metrics), is_best=improved, best_top1=best.top1,
                       training_state=_training_state(optimizer, scheduler, trainer))
            if trainer.ema is not None and ema_best.update(metrics.ema_top1, epoch, val_loader is None):
                ema_metrics = _metrics_dict(_epoch_metrics(epoch, stats, ema_evaluation, metrics.time_s))
                ema_best.path = str(saver.save_ema_best(trainer.ema.module, epoch=epoch, metrics=ema_metrics,
                                                        best_top1=ema_best.top1))
            results.add(metrics)
            logger.info(_epoch_line(metrics))
    elapsed = time.perf_counter() - start
    results.finish(best.top1, best.epoch, ema_best if trainer.ema is not None else None)
    return FitResult(history=history, best_epoch=best.epoch, best_top1=best.top1, best_path=best.path,
                     last_path=str(saver.last_path), results_path=str(results.path), elapsed_s=elapsed,
                     ema=ema_best if trainer.ema is not None else None)


def _training_state(optimizer: torch.optim.Optimizer, scheduler: LRScheduler, trainer: Trainer) -> dict[str, Any]:
    state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "global_step": trainer.global_step}
    if trainer.scaler is not None:
        state["scaler"] = trainer.scaler.state_dict()
    if trainer.ema is not None:
        state["model_ema"] = trainer.ema.module.state_dict()
    return state


def _epoch_metrics(epoch: int, stats: TrainStats, evaluation: EvalResult | None, seconds: float,
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
