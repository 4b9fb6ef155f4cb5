"""Detection training and evaluation steps: the model's own loss dict summed (torchvision detectors compute their
losses in train mode), the scheduler stepped every iteration; COCO mAP over the detections of every process."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler
from torch.utils.data import DataLoader

from tunecv.detection.coco import CocoIndex
from tunecv.detection.metrics import coco_detections, coco_scores
from tunecv.train.engine import NonFiniteLoss
from tunecv.utils import distributed
from tunecv.utils.progress import progress_bar
from tunecv.utils.runtime import Compute

logger = logging.getLogger(__name__)


@dataclass
class DetectionEpoch:
    loss: float  # the mean of the summed losses over the epoch's images
    parts: dict[str, float]  # each loss of the dict, mean
    images: int
    seconds: float
    lr: float  # at the epoch's last step
    finished: bool = True  # False: stopped early on a signal


def _to_device(images: list[torch.Tensor], targets: list[dict], compute: Compute):
    device = compute.device
    return ([image.to(device, non_blocking=True) for image in images],
            [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets])


def train_one_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer, scheduler: LRScheduler,
                    compute: Compute, epoch: int, *, scaler: torch.amp.GradScaler | None = None,
                    clip_norm: float | None = None, should_stop: Callable[[], bool] | None = None) -> DetectionEpoch:
    """One pass over `loader` ((images, targets) lists, `coco.collate`); the scheduler steps every iteration.
    `should_stop`: asked after each step; True ends the epoch there (`finished` False)."""
    model.train()
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
        if should_stop is not None and should_stop():
            return DetectionEpoch(0.0, {}, images_seen, time.perf_counter() - start, lr, finished=False)
    *totals, seen = distributed.sum_all([*sums.values(), images_seen], compute.device)  # over all processes
    parts = {name: total / max(seen, 1) for name, total in zip(sums, totals)}
    return DetectionEpoch(sum(parts.values()), parts, int(seen), time.perf_counter() - start, lr)


@dataclass
class DetectionScores:
    metrics: dict[str, float]  # bbox (and segm) mAP and mAP50, percent
    per_class: list[tuple[str, float | None]]  # each class's bbox AP, percent
    detections: list[dict]  # COCO results format


@torch.inference_mode()
def evaluate(model: nn.Module, loader: DataLoader, compute: Compute, index: CocoIndex,
             iou_types: tuple[str, ...] = ("bbox",)) -> DetectionScores:
    """COCO mAP of the model's detections on `loader`'s images, and those detections (COCO result format); in a
    distributed run each process detects on its share, the first scores them all and tells the others."""
    model.eval()
    detections: list[dict] = []
    for images, targets in progress_bar(loader, desc="val"):
        images = [image.to(compute.device, non_blocking=True) for image in images]
        with compute.autocast():
            outputs = model(images)
        detections += coco_detections(outputs, [int(t["image_id"]) for t in targets], index)
    if distributed.enabled():  # in the images' order, as one process lists them: COCOeval breaks score ties by it
        place = {image["id"]: i for i, image in enumerate(index.images)}
        detections = sorted((d for share in distributed.gather(detections) for d in share),
                            key=lambda d: place[d["image_id"]])
    scores = coco_scores(index, detections, iou_types) if distributed.is_main() else None
    metrics, per_class = distributed.broadcast(scores)
    return DetectionScores(metrics, per_class, detections)
