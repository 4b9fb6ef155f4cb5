"""Detection training and evaluation steps: the model's own loss dict summed (torchvision detectors compute their
losses in train mode), the MMDetection schedule (linear warm-up in iterations, steps at epochs), COCO mAP."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import DataLoader

from tunecv.detection.coco import CocoIndex
from tunecv.detection.metrics import coco_detections, coco_map
from tunecv.engine import NonFiniteLoss
from tunecv.progress import progress_bar
from tunecv.runtime import Compute

logger = logging.getLogger(__name__)


def lr_factor(step: int, warmup_iters: int, warmup_ratio: float, milestones: list[int], gamma: float) -> float:
    """The lr multiplier after `step` optimizer steps: MMDetection's linear warm-up from `warmup_ratio` over
    `warmup_iters` steps, times `gamma` for each milestone (in steps) passed."""
    decay = gamma ** sum(step >= m for m in milestones)
    if step < warmup_iters:
        return decay * (warmup_ratio + (1 - warmup_ratio) * step / warmup_iters)
    return decay


def create_step_schedule(optimizer: torch.optim.Optimizer, steps_per_epoch: int, *, warmup_iters: int = 500,
                         warmup_ratio: float = 0.001, milestones_epochs: list[int] = (), gamma: float = 0.1
                         ) -> LambdaLR:
    """The seed's schedule: `warmup_iters` steps of linear warm-up, lr x `gamma` at each epoch in
    `milestones_epochs` (counted from 1: [7] lowers it for epoch 8 on)."""
    milestones = [m * steps_per_epoch for m in milestones_epochs]
    return LambdaLR(optimizer, lambda step: lr_factor(step, warmup_iters, warmup_ratio, milestones, gamma))


@dataclass
class DetectionEpoch:
    loss: float  # the mean of the summed losses over the epoch's images
    parts: dict[str, float]  # each loss of the dict, mean
    images: int
    seconds: float
    lr: float  # at the epoch's last step


def _to_device(images: list[torch.Tensor], targets: list[dict], compute: Compute):
    device = compute.device
    return ([image.to(device, non_blocking=True) for image in images],
            [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets])


def train_one_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer, scheduler: LambdaLR,
                    compute: Compute, epoch: int, clip_norm: float | None = None) -> DetectionEpoch:
    """One pass over `loader` ((images, targets) lists, `coco.collate`); the scheduler steps every iteration."""
    model.train()
    scaler = compute.scaler()
    sums: dict[str, float] = {}
    images_seen, start, lr = 0, time.perf_counter(), optimizer.param_groups[0]["lr"]
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for images, targets in progress_bar(loader, desc=f"train {epoch}"):
        images, targets = _to_device(images, targets, compute)
        with compute.autocast():
            losses = model(images, targets)
        loss = sum(losses.values())
        if not math.isfinite(loss.item()):  # a detector's loss is read each step anyway: its parts are reported
            raise NonFiniteLoss(f"epoch {epoch}: the detection loss is not finite "
                                f"({', '.join(f'{k} {v.item():.3g}' for k, v in losses.items())}); lower lr")
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        if clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, clip_norm)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        count = len(images)
        images_seen += count
        for name, value in losses.items():
            sums[name] = sums.get(name, 0.0) + value.item() * count
    parts = {name: total / max(images_seen, 1) for name, total in sums.items()}
    return DetectionEpoch(sum(parts.values()), parts, images_seen, time.perf_counter() - start, lr)


@torch.inference_mode()
def evaluate(model: nn.Module, loader: DataLoader, compute: Compute, index: CocoIndex,
             iou_types: tuple[str, ...] = ("bbox",)) -> tuple[dict[str, float], list[dict]]:
    """COCO mAP of the model's detections on `loader`'s images, and those detections (COCO result format)."""
    model.eval()
    detections: list[dict] = []
    for images, targets in progress_bar(loader, desc="val"):
        images = [image.to(compute.device, non_blocking=True) for image in images]
        with compute.autocast():
            outputs = model(images)
        detections += coco_detections(outputs, [int(t["image_id"]) for t in targets], index)
    return coco_map(index, detections, iou_types), detections
