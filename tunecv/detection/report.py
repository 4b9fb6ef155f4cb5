"""Reports of a detection run: results.txt (the columns MMDetection users read: loss and COCO mAP per epoch),
metrics.json / metrics.csv with every loss part, curves.png, TensorBoard scalars."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tunecv.report.plots import plot_detection_curves
from tunecv.report.results import metrics_csv, tensorboard_writer
from tunecv.utils.fileio import atomic_write_text

RESULTS_COLUMNS = ("epoch", "lr", "train_loss", "bbox_mAP", "bbox_mAP50", "segm_mAP", "time_s")


def _cell(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if key == "epoch":
        return str(value)
    if key == "lr":
        return f"{value:.6g}"
    return f"{value:.4f}" if key == "train_loss" else f"{value:.1f}" if key == "time_s" else f"{value:.2f}"


class DetectionResults:
    """results.txt: a header, a row per epoch (rewritten atomically), then the best line; `masks` False leaves
    the segm_mAP column out (a box-only detector has none)."""

    def __init__(self, directory: str | os.PathLike, metric: str, masks: bool, csv: bool = True,
                 tensorboard: bool = False) -> None:
        """`metric`: what the best line names (best_metric)."""
        self.directory, self.metric = Path(directory), metric
        self.path = self.directory / "results.txt"
        self.columns = [c for c in RESULTS_COLUMNS if masks or not c.startswith("segm")]
        self.csv = csv
        if not csv:  # an overwritten run's file would pass for this one's
            (self.directory / "metrics.csv").unlink(missing_ok=True)
        self.tensorboard_dir = self.directory / "tensorboard" if tensorboard else None
        self.tensorboard = None
        self.history: list[dict[str, Any]] = []
        atomic_write_text(self.path, self._text())

    def _text(self, *extra: str) -> str:
        rows = [" ".join(_cell(c, row.get(c)) for c in self.columns) for row in self.history]
        return "\n".join([" ".join(self.columns), *rows, *extra]) + "\n"

    def add(self, metrics: dict[str, Any], replayed: bool = False) -> None:
        """`metrics`: the epoch's row (every loss part too); `replayed`: put back by a resumed run."""
        self.history.append(metrics)
        atomic_write_text(self.path, self._text())
        if self.csv:
            atomic_write_text(self.directory / "metrics.csv", metrics_csv(self.history))
        if replayed:
            return
        self.draw_curves()
        if self.tensorboard_dir is not None:
            if self.tensorboard is None:
                self.tensorboard = tensorboard_writer(self.tensorboard_dir, purge_step=metrics["epoch"])
            for name, value in metrics.items():
                if name != "epoch" and value is not None:
                    group = "loss" if "loss" in name else "coco" if "mAP" in name else "train"
                    self.tensorboard.add_scalar(f"{group}/{name}", value, metrics["epoch"])
            self.tensorboard.flush()

    def draw_curves(self) -> None:
        """curves.png from the rows so far (a detection epoch takes long enough to draw every one)."""
        if self.history:
            plot_detection_curves(self.history, self.directory / "curves.png")

    def finish(self, best: float | None, epoch: int, ema: tuple[float | None, int] | None = None) -> None:
        """The best line: the best value of the metric and its epoch (`ema`: unused, detectors keep no EMA)."""
        metric = self.metric
        line = f"best {metric} {'-' if best is None else f'{best:.2f}'} at epoch {epoch}"
        atomic_write_text(self.path, self._text(line))
        summary = {"best_metric": metric, f"best_{metric}": best, "best_epoch": epoch, "epochs": self.history}
        atomic_write_text(self.directory / "metrics.json", json.dumps(summary, indent=2) + "\n")
        if self.tensorboard is not None:
            self.tensorboard.close()
