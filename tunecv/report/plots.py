"""Pictures of a run (matplotlib, without pyplot's global state): training curves from results.txt (and a
detection run's history), the confusion matrix, and the most confidently wrong images (fastai's plot_top_losses)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from tunecv.report.calibration import ReliabilityBins
from tunecv.utils.fileio import atomic_target

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
    _finish_epoch_axes(loss, top1, lr, epochs, columns["lr"])
    return _save(fig, path)


def plot_detection_curves(history: list[dict], path: str | os.PathLike) -> Path:
    """curves.png of a detection run: each training loss, COCO mAP and lr against the epoch."""
    epochs = [row["epoch"] for row in history]
    fig = Figure(figsize=(12, 3.6), dpi=100)
    loss, precision, lr = fig.subplots(1, 3)
    for name in [key for key in history[0] if key.startswith("loss")] + ["train_loss"]:
        _plot_known(loss, epochs, [row.get(name) for row in history], name.removeprefix("loss_"))
    loss.set_title("training losses")
    loss.legend(fontsize=7)
    for name in ("bbox_mAP", "bbox_mAP50", "segm_mAP", "segm_mAP50"):
        _plot_known(precision, epochs, [row.get(name) for row in history], name)
    precision.set_title("COCO mAP (%)")
    _finish_epoch_axes(loss, precision, lr, epochs, [row["lr"] for row in history], fontsize=7)
    return _save(fig, path)


def _finish_epoch_axes(loss, scores, lr, epochs: list, lrs: list, fontsize: float | None = None) -> None:
    """The parts the curves of both tasks share: the scores' legend (or "not validated"), the lr on a log scale,
    integer epochs and a grid on the three panels."""
    if scores.get_legend_handles_labels()[0]:
        scores.legend(fontsize=fontsize)
    else:
        scores.text(0.5, 0.5, "not validated", ha="center", va="center", transform=scores.transAxes)
    lr.plot(epochs, lrs, "o-")
    lr.set_yscale("log")
    lr.set_title("learning rate (last step of the epoch)")
    for ax in (loss, scores, lr):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)


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
    return plot_grid(images, titles, path, "most confidently wrong: true / predicted probability",
                     empty="no wrong predictions")


def plot_batch(images: torch.Tensor, titles: list[str], mean: tuple[float, ...], std: tuple[float, ...],
               path: str | os.PathLike) -> Path:
    """batch.png: normalised (N, C, H, W) training inputs shown as the model's eyes get them, de-normalised."""
    shape = (1, -1, 1, 1)
    pixels = (images.float().cpu() * torch.tensor(std).view(shape) + torch.tensor(mean).view(shape)).clamp(0, 1)
    arrays = [image[0].numpy() if image.shape[0] == 1 else image[:3].permute(1, 2, 0).numpy() for image in pixels]
    size = f"{images.shape[-1]}x{images.shape[-2]} px"
    return plot_grid(arrays, titles, path, f"a training batch after augmentation ({size}): label")


def plot_grid(images: list, titles: list[str], path: str | os.PathLike, title: str, empty: str = "no images") -> Path:
    """Images (PIL, or HxW / HxWx3 arrays in [0, 1]) four to a row, each under its title."""
    columns = min(4, max(1, len(images)))
    rows = max(1, math.ceil(len(images) / columns))
    fig = Figure(figsize=(max(3 * columns, 6), 3.5 * rows), dpi=100)
    axes = np.atleast_1d(fig.subplots(rows, columns)).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, image, caption in zip(axes, images, titles):
        if getattr(image, "mode", None) == "L" or np.ndim(image) == 2:  # true intensities, not stretched
            ax.imshow(image, cmap="gray", vmin=0, vmax=255 if hasattr(image, "mode") else 1)
        else:
            ax.imshow(image)
        ax.set_title(caption, fontsize=9)
    if not images:
        axes[0].text(0.5, 0.5, empty, ha="center", va="center")
    fig.suptitle(title)
    return _save(fig, path)


def plot_reliability(curves: dict[str, ReliabilityBins], path: str | os.PathLike) -> Path:
    """reliability.png: accuracy against confidence per bin (the diagonal is perfect calibration), one panel per
    entry of `curves` (e.g. before and after temperature scaling), with the images per bin below."""
    fig = Figure(figsize=(4.2 * len(curves), 5.2), dpi=100)
    grid = fig.add_gridspec(2, len(curves), height_ratios=(3, 1))
    for column, (title, bins) in enumerate(curves.items()):
        top, bottom = fig.add_subplot(grid[0, column]), fig.add_subplot(grid[1, column])
        width = bins.edges[1] - bins.edges[0]
        centres = [lo + width / 2 for lo in bins.edges[:-1]]
        accuracy = [0.0 if math.isnan(a) else a for a in bins.accuracy]
        top.bar(centres, accuracy, width=width, edgecolor="black", linewidth=0.5, label="accuracy")
        filled = [(c, a, conf) for c, a, conf, n in zip(centres, accuracy, bins.confidence, bins.counts) if n]
        if filled:  # hatched outline from the accuracy to the mean confidence: over- or under-confidence
            top.bar([c for c, _, _ in filled], [conf - a for _, a, conf in filled], bottom=[a for _, a, _ in filled],
                    width=width, fill=False, hatch="//", edgecolor="tab:red", linewidth=0.8,
                    label="gap to mean confidence")
        top.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
        top.set(xlim=(0, 1), ylim=(0, 1), ylabel="accuracy", title=f"{title}: ECE {bins.ece:.2f} %")
        bottom.bar(centres, bins.counts, width=width, color="gray")
        # below, where confidences are rare; in the upper panel it would hide bars
        bottom.legend(*top.get_legend_handles_labels(), loc="upper left", fontsize=7)
        bottom.set(xlim=(0, 1), xlabel="confidence (top-1 probability)", ylabel="images")
    return _save(fig, path)


def _save(fig: Figure, path: str | os.PathLike) -> Path:
    fig.tight_layout()
    with atomic_target(path) as tmp:
        fig.savefig(tmp, format="png")  # the temp name's suffix is .tmp, so name the format
    return Path(path)
