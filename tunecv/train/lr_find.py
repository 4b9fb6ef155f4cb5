"""LR range test (fastai's `lr_find`): train with an exponentially growing lr, smooth the loss, stop when it
diverges, suggest the lr in the middle of the longest descent (fastai's `valley`); the weights are restored."""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from tunecv.errors import UserError
from tunecv.models.factory import set_train_mode
from tunecv.train.engine import Trainer, backward, batch_loss, optimizer_step
from tunecv.utils.fileio import atomic_target

logger = logging.getLogger(__name__)

START_LR, END_LR = 1e-7, 10.0
SMOOTHING = 0.98  # fastai's exponential moving average of the loss
DIVERGENCE = 4.0  # stop when the smoothed loss passes 4x its minimum


@dataclass(frozen=True)
class LRFindResult:
    lrs: list[float]
    losses: list[float]  # smoothed
    suggestion: float


def exponential_lrs(steps: int, start: float = START_LR, end: float = END_LR) -> list[float]:
    return [start * (end / start) ** (i / max(steps - 1, 1)) for i in range(steps)]


def valley(lrs: list[float], losses: list[float]) -> float:
    """fastai's suggestion: the longest decreasing subsequence of the loss curve, and the lr half way down it (past the
    start, before the minimum where it is about to diverge). The flat start, where the lr is too small to move the
    loss by 5 % of its total fall, is left out first: a zero-initialised head makes it a long, exactly monotone
    stretch that would drag the suggestion down by orders of magnitude."""
    lowest = min(range(len(losses)), key=losses.__getitem__)
    fall = losses[0] - losses[lowest]
    first = next((i for i in range(lowest + 1) if losses[0] - losses[i] > 0.05 * fall), 0)
    lrs, losses = lrs[first:], losses[first:]
    n = len(losses)
    longest = [1] * n
    end = 0
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and longest[i] < longest[j] + 1:
                longest[i] = longest[j] + 1
        if longest[i] > longest[end]:
            end = i
    start = end - longest[end] + 1
    section = (end - start) / 3
    return lrs[start + int(section) + int(section / 2)]


def smoothed(values: list[float], beta: float = SMOOTHING) -> list[float]:
    out, average = [], 0.0
    for i, value in enumerate(values, start=1):
        average = beta * average + (1 - beta) * value
        out.append(average / (1 - beta ** i))
    return out


def lr_find(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer, trainer: Trainer,
            steps: int) -> LRFindResult:
    """Run the range test with `optimizer` (its groups' lr_scale kept); the model's weights and buffers come back
    as they were, and `optimizer` must not be used for training afterwards."""
    saved = copy.deepcopy(model.state_dict())
    lrs = exponential_lrs(steps)
    tried: list[float] = []
    raw: list[float] = []
    set_train_mode(model, keep_frozen_eval=trainer.freeze_bn)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    try:
        batches = _endless(loader)
        optimizer.zero_grad(set_to_none=True)
        for lr in lrs:
            for group in optimizer.param_groups:
                group["lr"] = lr * group.get("lr_scale", 1.0)
            loss, _ = batch_loss(model, next(batches), trainer)
            backward(loss, trainer)  # one update as training does it: GradScaler and clipping included
            optimizer_step(optimizer, params, trainer)
            value = loss.item()
            tried.append(lr)
            raw.append(value)
            losses = smoothed(raw)
            if not math.isfinite(value) or (len(raw) > 5 and losses[-1] > DIVERGENCE * min(losses)):
                break
    finally:
        model.load_state_dict(saved)
        optimizer.zero_grad(set_to_none=True)
    losses = smoothed(raw)
    usable = [(lr, loss) for lr, loss in zip(tried, losses) if math.isfinite(loss)]
    if len(usable) < 3:
        suggestion = tried[0] if tried else START_LR
    else:
        suggestion = valley([u[0] for u in usable], [u[1] for u in usable])
    return LRFindResult(lrs=tried, losses=losses, suggestion=suggestion)


def _endless(loader: DataLoader):
    while True:
        emptied = True
        for batch in loader:
            if batch is None:
                continue
            emptied = False
            yield batch
        if emptied:
            raise UserError("lr_find: every training batch failed to load; check the images (bad_images.txt)")


def plot(result: LRFindResult, path: Path) -> Path:
    """lr_find.png: smoothed loss against lr (log scale), the suggestion marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    ax.plot(result.lrs, result.losses)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("loss (smoothed)")
    finite = [v for v in result.losses if math.isfinite(v)]
    if finite:
        ax.set_ylim(min(finite) * 0.95, min(max(finite), min(finite) * DIVERGENCE) * 1.05)
    ax.axvline(result.suggestion, color="tab:red", linestyle="--", label=f"suggested lr {result.suggestion:.2g}")
    ax.legend()
    ax.set_title("LR range test")
    fig.tight_layout()
    try:
        with atomic_target(path) as tmp:
            fig.savefig(tmp, format="png")  # the temp name's suffix is .tmp, so name the format
    finally:
        plt.close(fig)
    return path


def report(result: LRFindResult, path: Path) -> None:
    """lr_find.png, and one log line of the test and its suggestion."""
    plot(result, path)
    logger.info("lr_find: %d steps from %.1e to %.1e; suggested lr %.3g (plot: %s)", len(result.lrs), result.lrs[0],
                result.lrs[-1], result.suggestion, path)
