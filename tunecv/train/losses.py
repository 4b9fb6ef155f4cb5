"""Losses: cross-entropy (label smoothing, inverse-frequency class weights), BCE, and soft targets for mixup."""

from __future__ import annotations

import torch
from timm.loss import BinaryCrossEntropy, SoftTargetCrossEntropy
from torch import nn

from tunecv.config import TrainConfig


def inverse_frequency_weights(counts: list[int]) -> torch.Tensor:
    """N / (C * n_c): a class of average size weighs 1, a class ten times rarer 10."""
    total, num_classes = sum(counts), len(counts)
    return torch.tensor([total / (num_classes * max(n, 1)) for n in counts], dtype=torch.float32)


def create_loss(cfg: TrainConfig, mixing: bool, class_counts: list[int] | None = None) -> nn.Module:
    """Cross-entropy (+ smoothing, + inverse-frequency class weights) or BCE; with mixup the targets are soft and
    the smoothing is in the mix."""
    if cfg.loss == "bce":
        return BinaryCrossEntropy(smoothing=0.0 if mixing else cfg.label_smoothing)
    if mixing:
        return SoftTargetCrossEntropy()
    weight = inverse_frequency_weights(class_counts) if cfg.class_weights == "auto" and class_counts else None
    return nn.CrossEntropyLoss(weight=weight, label_smoothing=cfg.label_smoothing)
