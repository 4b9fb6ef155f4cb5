"""Pictures of a run (matplotlib, without pyplot's global state): training curves from results.txt, the
confusion matrix, and the most confidently wrong images (fastai's plot_top_losses)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from tunecv.fileio import atomic_target

TEXT_UP_TO = 20  # classes: past this the confusion matrix cells carry no numbers (they would not be readable)


def read_results(path: str | os.PathLike) -> dict[str, list[float | None]]:
    """results.txt's epoch rows as columns (`-` → None)."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    header = lines[0].split()
    rows = [line.split() for line in lines[1:] if line.split() and line.split()[0].isdigit()]
    return {name: [None if row[i] == "-" else float(row[i]) for row in rows] for i, name in enumerate(header)}


def plot_curves(results_path: str | os.PathLike, path: str | os.PathLike) -> Path:
    """curves.png: train/val loss, val top-1 and lr against the epoch."""
    columns = read_results(results_path)
    epochs = columns["epoch"]
    fig = Figure(figsize=(12, 3.6), dpi=100)
    loss, top1, lr = fig.subplots(1, 3)
    loss.plot(epochs, columns["train_loss"], "o-", label="train")
    _plot_known(loss, epochs, columns["val_loss"], "val")
    loss.set_title("loss")
    loss.legend()
    _plot_known(top1, epochs, columns["top1"], "val top-1")
    if "ema_top1" in columns:
        _plot_known(top1, epochs, columns["ema_top1"], "EMA top-1")
    top1.set_title("top-1 (%)")
    top1.legend()
    lr.plot(epochs, columns["lr"], "o-")
    lr.set_yscale("log")
    lr.set_title("learning rate (last step of the epoch)")
    for ax in (loss, top1, lr):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    return _save(fig, path)


def _plot_known(ax, epochs: list, values: list, label: str) -> None:
    known = [(e, v) for e, v in zip(epochs, values) if v is not None]
    if known:
        ax.plot(*zip(*known), "o-", label=label)


def plot_confusion(matrix: np.ndarray, classes: list[str], path: str | os.PathLike) -> Path:
    """confusion_matrix.png: rows are the true class, normalised to 1 (recall on the diagonal)."""
    totals = matrix.sum(axis=1, keepdims=True)
    normalised = np.divide(matrix, totals, out=np.zeros(matrix.shape, dtype=float), where=totals > 0)
    size = min(4 + 0.35 * len(classes), 30)
    fig = Figure(figsize=(size, size), dpi=100)
    ax = fig.subplots()
    image = ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046)
    ticks = range(len(classes))
    font = max(4, 10 - len(classes) // 15)
    ax.set_xticks(ticks, classes, rotation=90, fontsize=font)
    ax.set_yticks(ticks, classes, fontsize=font)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if len(classes) <= TEXT_UP_TO:
        for (row, col), value in np.ndenumerate(normalised):
            ax.text(col, row, f"{value:.2f}", ha="center", va="center", fontsize=font,
                    color="white" if value > 0.5 else "black")
    ax.set_title("confusion matrix (each row sums to 1)")
    return _save(fig, path)


def plot_top_losses(images: list, titles: list[str], path: str | os.PathLike) -> Path:
    """top_losses.png: a grid of images (PIL) with their titles (true / predicted / probability)."""
    columns = min(4, max(1, len(images)))
    rows = max(1, math.ceil(len(images) / columns))
    fig = Figure(figsize=(max(3 * columns, 6), 3.2 * rows), dpi=100)
    axes = np.atleast_1d(fig.subplots(rows, columns)).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, image, title in zip(axes, images, titles):
        ax.imshow(image, cmap="gray" if image.mode == "L" else None)
        ax.set_title(title, fontsize=9)
    if not images:
        axes[0].text(0.5, 0.5, "no wrong predictions", ha="center", va="center")
    fig.suptitle("most confidently wrong: true / predicted probability")
    return _save(fig, path)


def _save(fig: Figure, path: str | os.PathLike) -> Path:
    fig.tight_layout()
    with atomic_target(path) as tmp:
        fig.savefig(tmp, format="png")  # the temp name's suffix is .tmp, so name the format
    return Path(path)
