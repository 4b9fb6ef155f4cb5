"""Checkpoints: atomic `save_checkpoint`, safe `load_checkpoint`, `CheckpointSaver` (last, best, per-epoch).

A checkpoint is a plain dict of primitives and tensors, so `torch.load(weights_only=True)` reads it. The saver
writes what it is told; the engine decides what is best.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tunecv import __version__
from tunecv.errors import UserError
from tunecv.fileio import atomic_target
from tunecv.weights import load_checkpoint_file

logger = logging.getLogger(__name__)

REQUIRED_KEYS = ("model", "config", "classes")


def save_checkpoint(payload: dict[str, Any], path: str | os.PathLike) -> None:
    """torch.save to a temp file in the same folder, then rename: a crash never leaves half a checkpoint."""
    with atomic_target(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """A tunecv checkpoint (weights, config, classes), loaded with weights_only=True."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} not found; check --ckpt_path")
    data = load_checkpoint_file(path)
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise UserError(f"{path} is not a tunecv checkpoint (no {', '.join(missing)}); "
                        "use a <model>_best.pth written by finetune.py")
    return data


def file_stem(model_name: str) -> str:
    """Model names may hold '/' or ':' (hub names); file names may not."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", model_name)


class CheckpointSaver:
    """Writes `<model>_last.pth` every epoch, `<model>_best.pth` when told, and keeps up to
    `keep_max` per-epoch `<model>-<epoch>.pth` (latest_k: the newest; top_k: the highest top-1)."""

    def __init__(self, directory: str | os.PathLike, model_name: str, config: dict[str, Any], classes: list[str], *,
                 keep_max: int = 0, policy: str = "latest_k", interval: int = 1) -> None:
        self.directory = Path(directory)
        self.stem = file_stem(model_name)
        self.config = config
        self.classes = list(classes)
        self.keep_max, self.policy, self.interval = keep_max, policy, interval
        self.kept: list[tuple[float, int, Path]] = []  # (score, epoch, path)

    @property
    def best_path(self) -> Path:
        return self.directory / f"{self.stem}_best.pth"

    @property
    def last_path(self) -> Path:
        return self.directory / f"{self.stem}_last.pth"

    def payload(self, model: nn.Module, epoch: int, metrics: dict[str, Any],
                best_top1: float | None) -> dict[str, Any]:
        return {"model": model.state_dict(), "config": self.config, "classes": self.classes, "epoch": epoch,
                "metrics": metrics, "best_metric": best_top1, "tunecv_version": __version__}

    def save(self, model: nn.Module, *, epoch: int, metrics: dict[str, Any], is_best: bool,
             best_top1: float | None = None, training_state: dict[str, Any] | None = None) -> None:
        """`training_state` (optimizer, scheduler, scaler, step) goes into `_last` only, for resuming."""
        payload = self.payload(model, epoch, metrics, best_top1)
        if is_best:
            save_checkpoint(payload, self.best_path)
        if self.keep_max > 0 and epoch % self.interval == 0:
            self._save_epoch(payload, epoch, metrics.get("top1", 0.0))
        save_checkpoint({**payload, **(training_state or {})}, self.last_path)

    @property
    def ema_best_path(self) -> Path:
        return self.directory / f"{self.stem}_ema_best.pth"

    def save_ema_best(self, ema_model: nn.Module, *, epoch: int, metrics: dict[str, Any],
                      best_top1: float | None) -> Path:
        """The EMA weights at their best validated epoch: `<model>_ema_best.pth`, loadable by validate.py."""
        save_checkpoint({**self.payload(ema_model, epoch, metrics, best_top1), "weights": "ema"}, self.ema_best_path)
        return self.ema_best_path

    def _save_epoch(self, payload: dict[str, Any], epoch: int, top1: float) -> None:
        path = self.directory / f"{self.stem}-{epoch}.pth"
        save_checkpoint(payload, path)
        score = float(epoch) if self.policy == "latest_k" else top1
        self.kept.append((score, epoch, path))
        self.kept.sort(key=lambda item: (item[0], item[1]))
        while len(self.kept) > self.keep_max:
            _, _, dropped = self.kept.pop(0)
            dropped.unlink(missing_ok=True)
