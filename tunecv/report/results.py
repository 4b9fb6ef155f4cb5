"""Reports: results.txt and metrics.json for a run, per-class accuracy and pred.txt for validate.py."""

from __future__ import annotations

import csv
import io
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from tunecv.config.schema import DETECTION_METRICS
from tunecv.errors import TENSORBOARD_MISSING, UserError
from tunecv.report.plots import plot_curves
from tunecv.train.engine import EvalResult
from tunecv.utils.fileio import atomic_write_text

RESULTS_HEADER = "epoch lr train_loss val_loss top1 top5 time_s"
PRED_HEADER = ("path", "pred_label", "true_label", "score")
TOPK = 5


def reported_topk(num_classes: int) -> int | None:
    """The top-k accuracy a classifier's reports show besides top-1: top-5 with more than 5 classes, else none
    (top-k of k or fewer classes is 100 % whatever the model does). results.txt, metrics.json/csv, TensorBoard
    and validate.py all ask this."""
    return TOPK if num_classes > TOPK else None


def _cell(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def results_row(row: dict[str, Any], ema: bool = False) -> str:
    """A classification row (`tunecv.tasks.classification`'s) as results.txt's columns."""
    cells = [str(row["epoch"]), f"{row['lr']:.6g}", _cell(row["train_loss"], 4), _cell(row["val_loss"], 4),
             _cell(row["top1"], 2), _cell(row["top5"], 2), _cell(row["time_s"], 1)]
    return " ".join(cells + ([_cell(row.get("ema_top1"), 2)] if ema else []))


CURVES_SHARE_OF_TIME = 0.1


class ResultsWriter:
    """results.txt: a header, one row per epoch (rewritten atomically each epoch), then the best line;
    metrics.json holds the same, for machines; metrics.csv every metric of every epoch (`csv`); curves.png draws
    them; `tensorboard`: scalars under tensorboard/ too."""

    def __init__(self, directory: str | os.PathLike, ema: bool = False, csv: bool = True,
                 tensorboard: bool = False, topk: int | None = TOPK) -> None:
        """`ema`: one more column, the EMA weights' top-1; `topk`: `reported_topk` of the run's classes. None: top5
        is `-` in results.txt (the columns stay where scripts that read them expect them), null in metrics.json,
        empty in metrics.csv and absent from TensorBoard, a resumed run's older rows too."""
        self.path = Path(directory) / "results.txt"
        self.json_path = Path(directory) / "metrics.json"
        self.csv_path = Path(directory) / "metrics.csv" if csv else None
        if not csv:  # an overwritten run's file would pass for this one's
            (Path(directory) / "metrics.csv").unlink(missing_ok=True)
        self.tensorboard_dir = Path(directory) / "tensorboard" if tensorboard else None
        self.tensorboard = None
        self.ema, self.topk = ema, topk
        self.header = RESULTS_HEADER + (" ema_top1" if ema else "")
        self.rows: list[str] = []
        self.history: list[dict] = []
        self.undrawn, self.next_drawing = False, 0.0
        atomic_write_text(self.path, self.header + "\n")

    def add(self, metrics: dict[str, Any], replayed: bool = False) -> None:
        """`replayed`: a row a resumed run puts back (already drawn and sent to TensorBoard)."""
        if self.topk is None:  # top-k of k or fewer classes: 100 whatever the model does
            metrics = {**metrics, "top5": None}
        self.rows.append(results_row(metrics, self.ema))
        self.history.append(dict(metrics))
        atomic_write_text(self.path, "\n".join([self.header, *self.rows]) + "\n")
        if self.csv_path is not None:
            atomic_write_text(self.csv_path, metrics_csv(self.history))
        self.undrawn = True
        if replayed:  # drawn by the run that wrote it, unless it was killed before its next drawing
            return
        if time.perf_counter() >= self.next_drawing:
            self.draw_curves()
        if self.tensorboard_dir is not None:
            if self.tensorboard is None:  # steps from here on of an overwritten or resumed run's events are dropped
                self.tensorboard = tensorboard_writer(self.tensorboard_dir, purge_step=metrics["epoch"])
            for name, value in metrics.items():
                if name != "epoch" and value is not None:
                    self.tensorboard.add_scalar(_TENSORBOARD_TAGS.get(name, name), value, metrics["epoch"])
            self.tensorboard.flush()

    def draw_curves(self) -> None:
        """curves.png from the rows so far. A drawing takes 0.3-0.5 s; the next one waits until the run has spent
        at most CURVES_SHARE_OF_TIME of its time drawing (~4 s later), so epochs of cached features, which take
        milliseconds, are not slowed tenfold, and epochs longer than that are each drawn. `finish`, a stop and a
        failure draw the last rows."""
        if not self.undrawn:
            return
        start = time.perf_counter()
        plot_curves(self.path, self.path.parent / "curves.png")
        self.undrawn, self.next_drawing = False, start + (time.perf_counter() - start) / CURVES_SHARE_OF_TIME

    def finish(self, best: float | None, epoch: int, ema: tuple[float | None, int] | None = None) -> None:
        """The best line(s): the best top-1 and its epoch, and the EMA weights' (`ema`: top-1, epoch)."""
        self.draw_curves()
        lines = [f"best top1 {_cell(best, 2)} at epoch {epoch}"]
        summary = {"best_top1": best, "best_epoch": epoch}
        if ema is not None:
            lines.append(f"best ema_top1 {_cell(ema[0], 2)} at epoch {ema[1]}")
            summary.update(ema_best_top1=ema[0], ema_best_epoch=ema[1])
        atomic_write_text(self.path, "\n".join([self.header, *self.rows, *lines]) + "\n")
        summary["epochs"] = self.history
        atomic_write_text(self.json_path, json.dumps(summary, indent=2) + "\n")
        if self.tensorboard is not None:
            self.tensorboard.close()


# TensorBoard groups scalars by the part before "/"
_TENSORBOARD_TAGS = {"train_loss": "loss/train", "val_loss": "loss/val", "top1": "accuracy/top1",
                     "top5": "accuracy/top5", "ema_top1": "accuracy/ema_top1", "lr": "lr",
                     "train_images_per_s": "speed/train_images_per_s", "eval_images_per_s": "speed/eval_images_per_s",
                     "time_s": "speed/epoch_seconds"}


def tensorboard_writer(directory: Path, purge_step: int | None = None) -> Any:
    """torch's SummaryWriter (events at `purge_step` and later already in `directory` are dropped), or a
    UserError saying how to install the optional dependency."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UserError(TENSORBOARD_MISSING) from None
    return SummaryWriter(log_dir=str(directory), purge_step=purge_step)


def metrics_csv(history: list[dict]) -> str:
    """One row per epoch, a column per field of the rows; empty cells where not measured."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(history[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in history)
    return out.getvalue()


def per_class_accuracy(result: EvalResult, classes: list[str]) -> list[tuple[str, int, float]]:
    """(class, images, top-1 %) for each class present in the evaluated data."""
    rows = []
    for label, name in enumerate(classes):
        hits = [p == t for p, t in zip(result.predictions, result.targets) if t == label]
        if hits:
            rows.append((name, len(hits), 100.0 * sum(hits) / len(hits)))
    return rows


def format_per_class(rows: list[tuple[str, int, float]]) -> str:
    width = max([len("class")] + [len(name) for name, _, _ in rows])
    lines = [f"{'class':<{width}}  images  top1"]
    lines += [f"{name:<{width}}  {count:>6}  {acc:6.2f}" for name, count, acc in rows]
    return "\n".join(lines)


def write_predictions(path: str | os.PathLike, sample_ids: list[str], result: EvalResult,
                      classes: list[str]) -> Path:
    """pred.txt: a header, then `path pred_label true_label score` per image (labels are class names).
    Tab-separated, so paths and class names with spaces stay one field."""
    lines = ["\t".join(PRED_HEADER)]
    for sample_id, pred, target, score in zip(sample_ids, result.predictions, result.targets, result.scores):
        lines.append(f"{sample_id}\t{classes[pred]}\t{classes[target]}\t{score:.4f}")
    path = Path(path)
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def write_class_report(path: str | os.PathLike, result: EvalResult, classes: list[str]) -> np.ndarray:
    """report.txt: scikit-learn's per-class precision / recall / F1 with macro and weighted averages; returns the
    confusion matrix (rows: true class)."""
    from sklearn.metrics import classification_report, confusion_matrix  # 1 s to import: validate.py's only

    labels = list(range(len(classes)))
    text = classification_report(result.targets, result.predictions, labels=labels, target_names=classes, digits=4,
                                  zero_division=0)
    topk = reported_topk(len(classes))
    scores = f"top-1 {result.top1:.2f} %" + (f", top-{topk} {result.top5:.2f} %" if topk else "")
    atomic_write_text(path, f"{result.images} images, {scores}\n\n{text}")
    return confusion_matrix(result.targets, result.predictions, labels=labels)


def most_confidently_wrong(result: EvalResult, count: int = 16) -> list[tuple[int, int, int, float]]:
    """(dataset index, true label, predicted label, its probability) of the wrong predictions, surest first."""
    wrong = [(score, index, target, pred) for pred, score, target, index in
             zip(result.predictions, result.scores, result.targets, result.indices) if pred != target]
    return [(index, target, pred, score) for score, index, target, pred in sorted(wrong, reverse=True)[:count]]


def write_table(path: str | os.PathLike, rows: list[dict]) -> None:
    """predict.py's rows (path, top: [(class, probability), ...]) as .json, or .csv with class_i, score_i columns."""
    if str(path).endswith(".json"):
        records = [{"path": row["path"], "top": [{"class": c, "score": p} for c, p in row["top"]]} for row in rows]
        atomic_write_text(path, json.dumps(records, indent=1) + "\n")
        return
    k = max((len(row["top"]) for row in rows), default=1)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["path", *(f"{name}_{i}" for i in range(1, k + 1) for name in ("class", "score"))])
    writer.writerows([row["path"], *(value for pair in row["top"] for value in pair)] for row in rows)
    atomic_write_text(path, out.getvalue())


SCORES = ("top1", "top5", *DETECTION_METRICS)  # the scores an epoch line shows, in this order


def epoch_line(row: dict[str, Any]) -> str:
    """The log line of an epoch: lr, losses, the scores measured, time."""
    line = f"epoch {row['epoch']}: lr {row['lr']:.3g} train_loss {row['train_loss']:.4f} " \
           f"({row['train_images_per_s']:.0f} img/s)"
    if row.get("val_loss") is not None:
        line += f" | val_loss {row['val_loss']:.4f}"
    scores = [f"{name} {value:.2f}" for name, value in row.items()
              if name in SCORES and value is not None]
    if scores:
        line += " " + " ".join(scores) if row.get("val_loss") is not None else " | " + " ".join(scores)
    if row.get("eval_images_per_s") is not None:
        line += f" ({row['eval_images_per_s']:.0f} img/s)"
    if row.get("ema_top1") is not None:
        line += f" | ema top1 {row['ema_top1']:.2f}"
    return line + f" | {row['time_s']:.1f} s"
