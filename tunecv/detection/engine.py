"""Detection steps: the batch loss the shared engine trains with (the model's own loss dict summed: torchvision
detectors compute their losses in train mode); COCO mAP over the detections of every process."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader

from tunecv.detection.coco import CocoIndex
from tunecv.detection.metrics import coco_detections, coco_scores
from tunecv.train.engine import Trainer
from tunecv.utils import distributed
from tunecv.utils.progress import progress_bar
from tunecv.utils.runtime import Compute

logger = logging.getLogger(__name__)


def _to_device(images: list[torch.Tensor], targets: list[dict], compute: Compute):
    device = compute.device
    return ([image.to(device, non_blocking=True) for image in images],
            [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets])


def detection_loss(model: nn.Module, batch: tuple[list[torch.Tensor], list[dict]], trainer: Trainer
                   ) -> tuple[torch.Tensor, int, dict[str, torch.Tensor]]:
    """A detector's batch loss: the sum of the loss dict it returns in train mode, and the dict (its parts)."""
    images, targets = _to_device(batch[0], batch[1], trainer.compute)
    with trainer.compute.autocast():
        losses = model(images, targets)
    return sum(losses.values()), len(images), losses


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
