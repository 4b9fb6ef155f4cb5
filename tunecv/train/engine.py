"""Engine: `train_one_epoch` (any task: the task's `Trainer.batch_loss` gives each batch's loss) and the classifier's
`evaluate` (`tunecv.train.loop` runs the epochs); AMP, accumulation, clipping, EMA, progress bars, metrics.

Must not parse config files or print (progress goes through tqdm, facts through logging).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from timm.data import Mixup
from timm.utils import ModelEmaV3
from torch import nn
from torch.optim.lr_scheduler import LRScheduler
from torch.utils.data import DataLoader

from tunecv.config import TrainConfig
from tunecv.errors import UserError
from tunecv.models.aux_heads import with_auxiliary_loss
from tunecv.models.factory import set_train_mode
from tunecv.optim.optimizers import base_lr
from tunecv.train.losses import create_loss
from tunecv.utils import distributed
from tunecv.utils.progress import progress_bar
from tunecv.utils.runtime import Compute

logger = logging.getLogger(__name__)


@dataclass
class Trainer:
    """What one optimizer step needs besides the batch; built once by the task (`create_trainer` for a
    classifier). `batch_loss`: (model, batch, trainer) -> (loss, images, {part: loss}) for one batch."""

    loss_fn: Callable | None
    compute: Compute
    num_classes: int
    accumulation_steps: int = 1
    clip_norm: float | None = None
    mixup: Mixup | None = None
    ema: ModelEmaV3 | None = None
    scaler: torch.amp.GradScaler | None = None
    log_interval: int = 100
    freeze_bn: bool = True
    norm_eval: tuple[nn.Module, ...] = ()  # BatchNorm kept in eval mode though it trains (unfreeze_bn: eval)
    global_step: int = 0
    skipped_steps: int = 0  # fp16 steps the GradScaler skipped for inf/nan gradients
    batch_loss: Callable[[nn.Module, Any, Trainer], tuple[torch.Tensor, int, dict[str, torch.Tensor]]] | None = None


def create_trainer(model: nn.Module, cfg: TrainConfig, compute: Compute, mixup: Mixup | None,
                   class_counts: list[int], freeze_bn: bool = True, norm_eval: tuple[nn.Module, ...] = (),
                   aux_factor: float = 0.0) -> Trainer:
    """The model must already be on its device (the EMA copies it). `class_counts`: training images per class;
    `aux_factor`: the weight of the model's auxiliary heads' losses."""
    ema = ModelEmaV3(model, decay=cfg.ema_decay, use_warmup=True) if cfg.ema else None
    loss_fn = with_auxiliary_loss(create_loss(cfg, mixup is not None, class_counts), model, aux_factor)
    loss_fn = loss_fn.to(compute.device)
    return Trainer(loss_fn=loss_fn, compute=compute, num_classes=len(class_counts),
                   accumulation_steps=cfg.gradient_accumulation_steps,
                   clip_norm=cfg.clip_value if cfg.clip_grad else None, mixup=mixup, ema=ema,
                   scaler=compute.scaler(), log_interval=cfg.log_interval, freeze_bn=freeze_bn,
                   norm_eval=norm_eval)


@dataclass
class EpochProgress:
    """An epoch's running totals after `batches` batches: a mid-epoch checkpoint holds them, so a resumed epoch
    reports what an uninterrupted one would."""

    batches: int = 0
    loss_sum: float = 0.0
    images: int = 0  # images whose loss counted (an AMP step the scaler skipped for overflow does not)
    lr: float = 0.0
    seconds: float = 0.0
    finished: bool = False
    part_sums: dict[str, float] = field(default_factory=dict)  # the parts of a loss made of several (a detector's)

    @property
    def loss(self) -> float:
        return self.loss_sum / max(self.images, 1)

    @property
    def parts(self) -> dict[str, float]:
        return {name: total / max(self.images, 1) for name, total in self.part_sums.items()}


class NonFiniteLoss(UserError):
    pass


def optimizer_steps(num_batches: int, accumulation_steps: int) -> int:
    return math.ceil(num_batches / accumulation_steps)


def train_one_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer, scheduler: LRScheduler,
                    trainer: Trainer, epoch: int, progress: EpochProgress | None = None,
                    after_step: Callable[[Callable[[], EpochProgress], bool], bool] | None = None) -> EpochProgress:
    """A pass over `loader` (the rest of an epoch resumed at `progress`); the scheduler steps after every
    optimizer update. `after_step(snapshot, last_step)` runs after each update and returns True to stop the epoch there;
    `snapshot()` gives the totals so far (a device sync) and raises NonFiniteLoss after a NaN/inf loss."""
    set_train_mode(model, keep_frozen_eval=trainer.freeze_bn, keep_eval=trainer.norm_eval)
    device = trainer.compute.device
    progress = progress or EpochProgress(lr=base_lr(optimizer))
    params = [p for g in optimizer.param_groups for p in g["params"]]
    # device-side totals: read (a sync) only at the log interval, a checkpoint and the end
    loss_sum = torch.tensor(progress.loss_sum, device=device)
    part_sums = {name: torch.tensor(value, device=device) for name, value in progress.part_sums.items()}
    counted = torch.tensor(progress.images, device=device)
    first_bad_step = torch.tensor(-1, device=device)
    seen, start, lr, done = 0, time.perf_counter(), progress.lr, progress.batches
    total = done + len(loader)
    optimizer.zero_grad(set_to_none=True)

    def snapshot(finished: bool = False) -> EpochProgress:
        bad = int(first_bad_step.item())
        if bad >= 0:
            raise NonFiniteLoss(f"epoch {epoch} step {bad}: the training loss is not finite (nan/inf); lower lr "
                                f"(now {lr:.3g}) or set clip_grad true")
        return EpochProgress(done, loss_sum.item(), int(counted.item()), lr,
                             progress.seconds + time.perf_counter() - start, finished,
                             {name: total.item() for name, total in part_sums.items()})

    step_loss = trainer.batch_loss or classification_loss
    bar = progress_bar(loader, desc=f"train {epoch}", initial=done, total=total)
    pending = False  # gradients accumulated since the last optimizer step
    for done, batch in enumerate(bar, start=progress.batches + 1):
        update = done % trainer.accumulation_steps == 0 or done == total
        if batch is not None:  # None: every image of the batch failed to decode and was skipped
            with nullcontext() if update or not hasattr(model, "no_sync") else model.no_sync():
                loss, count, parts = step_loss(model, batch, trainer)
                backward(loss / trainer.accumulation_steps, trainer)
            finite = torch.isfinite(loss.detach())
            if trainer.scaler is None:  # fp16's scaler skips an overflowing step itself
                first_bad_step = torch.where(finite | (first_bad_step >= 0), first_bad_step, trainer.global_step + 1)
            loss_sum += torch.where(finite, loss.detach() * count, 0.0)
            for name, part in parts.items():
                part_sums[name] = part_sums.get(name, 0.0) + torch.where(finite, part.detach() * count, 0.0)
            counted += finite * count
            seen += count
            pending = True
        if pending and update:
            lr = base_lr(optimizer)
            optimizer_step(optimizer, params, trainer)
            scheduler.step()
            trainer.global_step += 1
            pending = False
            if trainer.ema is not None:
                trainer.ema.update(distributed.unwrap(model), step=trainer.global_step)
            if after_step is not None and after_step(snapshot, done == total):
                return snapshot()
        if seen and (done % trainer.log_interval == 0 or done == total):
            now = snapshot()
            bar.set_postfix(loss=f"{now.loss:.4f}", lr=f"{lr:.3g}", img_s=f"{seen / max(now.seconds, 1e-9):.0f}")
    return snapshot(finished=True)


def classification_loss(model: nn.Module, batch: tuple, trainer: Trainer
                        ) -> tuple[torch.Tensor, int, dict[str, torch.Tensor]]:
    """A classifier's batch loss, with no parts."""
    loss, count = batch_loss(model, batch, trainer)
    return loss, count, {}


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
        scale = trainer.scaler.get_scale()
        trainer.scaler.step(optimizer)
        trainer.scaler.update()
        if trainer.scaler.get_scale() < scale:  # it lowers the scale exactly when it skipped the step
            trainer.skipped_steps += 1
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
    logits: torch.Tensor | None = None  # (images, classes), float32 on the CPU, before the temperature; keep_logits
    temperature: float = 1.0  # what loss and scores were computed with


@torch.inference_mode()
def evaluate(model: nn.Module, loader: DataLoader, compute: Compute, num_classes: int, *,
             desc: str = "eval", temperature: float = 1.0, keep_logits: bool = False) -> EvalResult:
    """Loss (plain cross-entropy), top-1 and top-k (k = min(5, num_classes)) in percent, and per-image predictions;
    loss and scores are of softmax(logits / temperature) (a calibrated model's probabilities)."""
    model.eval()
    device, k = compute.device, min(5, num_classes)
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    preds, scores, labels, indices, kept, correct_k = [], [], [], [], [], 0
    start = time.perf_counter()
    for batch in progress_bar(loader, desc=desc):
        if batch is None:
            continue
        inputs, targets = compute.inputs(batch[0]), batch[1].to(device, non_blocking=True)
        # datasets return (image, label, index): the index keeps predictions tied to files when one is skipped
        indices.extend(batch[2].tolist() if len(batch) > 2 else range(len(indices), len(indices) + len(targets)))
        with compute.autocast():
            logits = model(inputs)
        logits = logits.float()
        if keep_logits:
            kept.append(logits.cpu())
        logits = logits / temperature
        loss_sum += nn.functional.cross_entropy(logits, targets, reduction="sum").double()
        probs = logits.softmax(dim=1)
        top = probs.topk(k, dim=1)
        correct_k += (top.indices == targets[:, None]).any(dim=1).sum().item()
        preds.extend(top.indices[:, 0].tolist())
        scores.extend(top.values[:, 0].tolist())
        labels.extend(targets.tolist())
    loss_total = loss_sum.item()
    logits = torch.cat(kept) if kept else None
    if distributed.enabled():  # each process evaluated its share: merge them, in dataset order
        parts = distributed.gather((indices, preds, scores, labels, logits, loss_total, correct_k))
        indices, preds, scores, labels = (sum((part[column] for part in parts), []) for column in range(4))
        order = sorted(range(len(indices)), key=indices.__getitem__)
        indices, preds, scores, labels = ([column[i] for i in order] for column in (indices, preds, scores, labels))
        shares = [part[4] for part in parts if part[4] is not None]
        logits = torch.cat(shares)[order] if shares else None
        loss_total, correct_k = sum(part[5] for part in parts), sum(part[6] for part in parts)
    count = len(labels)
    correct1 = sum(int(p == t) for p, t in zip(preds, labels))
    return EvalResult(loss=loss_total / max(count, 1), top1=100.0 * correct1 / max(count, 1),
                      top5=100.0 * correct_k / max(count, 1), topk=k, images=count,
                      seconds=time.perf_counter() - start, predictions=preds, scores=scores, targets=labels,
                      indices=indices, logits=logits,
                      temperature=temperature)
