"""Calibration: how far a classifier's confidence is from its accuracy (ECE, reliability bins) and temperature
scaling (Guo et al., 2017), which divides the logits by one fitted number: top-1 is unchanged, the probabilities
become honest."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

ECE_BINS = 15  # Guo et al.'s choice, as torchmetrics and most papers use


@dataclass
class ReliabilityBins:
    """Per confidence bin (equal width over [0, 1]): images, mean confidence, accuracy (NaN where empty)."""

    edges: list[float]
    counts: list[int]
    confidence: list[float]
    accuracy: list[float]

    @property
    def ece(self) -> float:
        """Expected calibration error in percent: the image-weighted mean |accuracy - confidence| over the bins."""
        total = sum(self.counts)
        gaps = [n * abs(a - c) for n, a, c in zip(self.counts, self.accuracy, self.confidence) if n]
        return 100.0 * sum(gaps) / total if total else 0.0


def reliability_bins(confidences: list[float], correct: list[bool], bins: int = ECE_BINS) -> ReliabilityBins:
    """Top-1 probabilities and whether each top-1 was right, grouped by confidence. A confidence of exactly 1 goes
    to the last bin; bins are (lo, hi] as in Guo et al."""
    edges = [i / bins for i in range(bins + 1)]
    members: list[list[tuple[float, bool]]] = [[] for _ in range(bins)]
    for confidence, hit in zip(confidences, correct):
        members[min(bins - 1, max(0, math.ceil(confidence * bins) - 1))].append((confidence, hit))
    counts = [len(m) for m in members]
    mean_confidence = [sum(c for c, _ in m) / len(m) if m else math.nan for m in members]
    accuracy = [sum(h for _, h in m) / len(m) if m else math.nan for m in members]
    return ReliabilityBins(edges, counts, mean_confidence, accuracy)


def calibrated_top1(logits: torch.Tensor, temperature: float) -> tuple[list[float], list[int]]:
    """(top-1 probability, top-1 class) per row of softmax(logits / temperature)."""
    values, indices = (logits.float() / temperature).softmax(dim=1).max(dim=1)
    return values.tolist(), indices.tolist()


def nll(logits: torch.Tensor, targets: torch.Tensor, temperature: float) -> float:
    return float(nn.functional.cross_entropy(logits.float() / temperature, targets))


TEMPERATURE_RANGE = (1e-2, 1e2)


def fit_temperature(logits: torch.Tensor, targets: torch.Tensor, max_iter: int = 100) -> float | None:
    """The temperature T > 0 that minimises the negative log-likelihood of softmax(logits / T) (L-BFGS on log T,
    so T stays positive), within TEMPERATURE_RANGE; None when the fit diverged. Without a wrong top-1 the
    likelihood has no minimum (it keeps rising as T → 0): callers check for that first."""
    # a clone: logits from an inference_mode pass cannot take part in autograd
    logits, targets = logits.detach().float().cpu().clone(), targets.detach().cpu().clone()
    log_t = torch.zeros((), requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(logits / log_t.exp(), targets)
        loss.backward()
        return loss

    optimizer.step(closure)
    temperature = float(log_t.detach().exp())
    if not math.isfinite(temperature):
        return None
    return min(max(temperature, TEMPERATURE_RANGE[0]), TEMPERATURE_RANGE[1])
