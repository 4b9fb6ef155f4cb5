"""Checkpoints: atomic `save_checkpoint`, safe `load_checkpoint`, `CheckpointSaver` (last, best, per-epoch).

A checkpoint is a plain dict of primitives and tensors, so `torch.load(weights_only=True)` reads it; with
save_format safetensors, the weights go to a .safetensors file and the rest to a .json sidecar beside it.
The saver writes what it is told; the engine decides what is best.
"""

from __future__ import annotations

import json
import logging
import os
import re
import uuid
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tunecv import __version__
from tunecv.errors import UserError
from tunecv.models.weights import TUNECV_FIX, load_checkpoint_file, load_safetensors_file
from tunecv.utils.fileio import atomic_target, atomic_write_text

logger = logging.getLogger(__name__)

REQUIRED_KEYS = ("model", "config", "classes")
SAVE_ID = "tunecv_save_id"  # in a .safetensors header and its sidecar: the two files belong to one save


def save_checkpoint(payload: dict[str, Any], path: str | os.PathLike) -> None:
    """torch.save to a temp file in the same folder, then rename: a crash never leaves half a checkpoint."""
    with atomic_target(path) as tmp:
        torch.save(payload, tmp)


def sidecar_path(path: str | os.PathLike) -> Path:
    """`<stem>_best.safetensors` → `<stem>_best.json`: config, classes, epoch and metrics of those weights."""
    return Path(path).with_suffix(".json")


def save_safetensors(payload: dict[str, Any], path: str | os.PathLike) -> None:
    """payload["model"] to `path` (safetensors), everything else to its JSON sidecar, each written atomically.
    Both carry one random save id, so a pair torn by a crash between the two writes is refused on load."""
    from safetensors.torch import save_file

    save_id = uuid.uuid4().hex
    with atomic_target(path) as tmp:
        save_file(own_storage(payload["model"]), tmp, metadata={"format": "pt", SAVE_ID: save_id})
    rest = {k: v for k, v in payload.items() if k != "model"}
    atomic_write_text(sidecar_path(path), json.dumps({**rest, SAVE_ID: save_id}, indent=2) + "\n")


def own_storage(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses tensors that share memory (tied weights, views of one buffer) and non-contiguous
    ones: the first user of a storage keeps it, later ones get a copy (so no extra memory without sharing)."""
    seen: set[int] = set()
    out = {}
    for key, tensor in state.items():
        tensor = tensor.detach()
        storage = tensor.untyped_storage().data_ptr()
        out[key] = tensor.clone(memory_format=torch.contiguous_format) if storage in seen else tensor.contiguous()
        seen.add(storage)
    return out


FORMATS = {"pth": (".pth", save_checkpoint), "safetensors": (".safetensors", save_safetensors)}


def load_checkpoint(path: str | os.PathLike, *, fix: str = TUNECV_FIX) -> dict[str, Any]:
    """A tunecv checkpoint (weights, config, classes): a .pth loaded with weights_only=True, or a .safetensors
    file with its .json sidecar, as the same dict. `fix`: what the error tells the user to give instead."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"checkpoint {path} not found; check --ckpt_path")
    if path.suffix == ".safetensors":
        data = _load_safetensors_checkpoint(path, fix)
    else:
        data = load_checkpoint_file(path, fix)
    problem = tunecv_problem(data)
    if problem:
        raise UserError(f"{path} is not a tunecv checkpoint ({problem}); {fix}")
    return data


def tunecv_problem(data: dict[str, Any]) -> str | None:
    """What a loaded dict lacks of a tunecv checkpoint (weights, config and classes), or None."""
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing and all(isinstance(v, torch.Tensor) for v in data.values()):
        return "a plain state_dict, without the config and classes finetune.py saves"
    if missing:
        return f"no {', '.join(missing)}"
    kinds = {"model": dict, "config": dict, "classes": (list, tuple)}
    wrong = [k for k, kind in kinds.items() if not isinstance(data[k], kind)]
    return f"its {', '.join(wrong)} {'is' if len(wrong) == 1 else 'are'} of another kind" if wrong else None


def _load_safetensors_checkpoint(path: Path, fix: str) -> dict[str, Any]:
    weights = load_safetensors_file(path, fix)  # first: a damaged weights file is the problem to name
    sidecar = sidecar_path(path)
    if not sidecar.is_file():
        raise UserError(f"{path} has no sidecar {sidecar} (its config and classes); "
                        "copy the .json written with it next to it")
    try:
        info = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise UserError(f"sidecar {sidecar} is not readable JSON ({err}); restore the file finetune.py wrote") \
            from None
    if not isinstance(info, dict):
        raise UserError(f"sidecar {sidecar} holds a {type(info).__name__}, not a JSON object; "
                        "restore the file finetune.py wrote")
    save_id = info.pop(SAVE_ID, None)
    if save_id is not None and save_id != _safetensors_metadata(path).get(SAVE_ID):
        raise UserError(f"sidecar {sidecar} was written with other weights than {path} (a save interrupted "
                        "between the two files); use the run's _last.pth, or copy both files of one save")
    return {"model": weights, **info}


def update_checkpoint(path: str | os.PathLike, values: dict[str, Any]) -> None:
    """Add or replace entries (e.g. the fitted temperature) of a checkpoint, atomically: of a .pth itself, of a
    .safetensors its sidecar (the weights, and so the save id, stay)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        sidecar = sidecar_path(path)
        info = json.loads(sidecar.read_text(encoding="utf-8"))
        atomic_write_text(sidecar, json.dumps({**info, **values}, indent=2) + "\n")
        return
    save_checkpoint({**load_checkpoint_file(path), **values}, path)


def _safetensors_metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:  # reads the header only
        return handle.metadata() or {}


def file_stem(model_name: str) -> str:
    """Model names may hold '/' or ':' (hub names); file names may not."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", model_name)


class CheckpointSaver:
    """Writes `<model>_last.pth` every epoch, `<model>_best` when told, and keeps up to `keep_max` per-epoch
    `<model>-<epoch>` (latest_k: the newest; top_k: the highest top-1). `save_format` safetensors writes the best
    and per-epoch weights as .safetensors + .json sidecar; `_last` stays .pth in both formats, because it also
    holds the optimizer, scheduler and scaler state that resuming needs. `meta` (e.g. {"data_fingerprint": ...})
    goes into every checkpoint."""

    def __init__(self, directory: str | os.PathLike, model_name: str, config: dict[str, Any], classes: list[str], *,
                 keep_max: int = 0, policy: str = "latest_k", interval: int = 1, save_format: str = "pth",
                 meta: dict[str, Any] | None = None, score_key: str = "top1") -> None:
        if save_format not in FORMATS:
            raise UserError(f"unknown save_format {save_format!r}; choose from {sorted(FORMATS)}")
        self.directory = Path(directory)
        self.stem = file_stem(model_name)
        self.config = config
        self.classes = list(classes)
        self.keep_max, self.policy, self.interval = keep_max, policy, interval
        self.suffix, self.write = FORMATS[save_format]
        self.meta = dict(meta or {})
        self.kept: list[tuple[float, int, Path]] = []  # (score, epoch, path)
        self.score_key = score_key  # the metric top_k keeps the highest of

    @property
    def best_path(self) -> Path:
        return self.directory / f"{self.stem}_best{self.suffix}"

    @property
    def last_path(self) -> Path:
        return self.directory / f"{self.stem}_last.pth"

    def payload(self, model: nn.Module, epoch: int, metrics: dict[str, Any],
                best_top1: float | None) -> dict[str, Any]:
        # meta first: it can never replace the keys every checkpoint must have
        return {**self.meta, "model": model.state_dict(), "config": self.config, "classes": self.classes,
                "epoch": epoch, "metrics": metrics, "best_metric": best_top1, "tunecv_version": __version__}

    def save(self, model: nn.Module, *, epoch: int, metrics: dict[str, Any], is_best: bool,
             best_top1: float | None = None, training_state: dict[str, Any] | None = None) -> None:
        """`training_state` (optimizer, scheduler, scaler, step) goes into `_last` only, for resuming."""
        payload = self.payload(model, epoch, metrics, best_top1)
        if is_best:
            self.write(payload, self.best_path)
        if self.keep_max > 0 and epoch % self.interval == 0:
            self._save_epoch(payload, epoch, metrics.get(self.score_key) or 0.0)
        self._write_last(payload, training_state or {})

    def save_last(self, model: nn.Module, *, epoch: int, metrics: dict[str, Any], best_top1: float | None,
                  training_state: dict[str, Any]) -> None:
        """`_last` alone (a checkpoint in the middle of an epoch)."""
        self._write_last(self.payload(model, epoch, metrics, best_top1), training_state)

    def _write_last(self, payload: dict[str, Any], training_state: dict[str, Any]) -> None:
        # the per-epoch files kept so far: a resumed run goes on pruning them
        kept = [[score, epoch, str(path)] for score, epoch, path in self.kept]
        save_checkpoint({**payload, **training_state, "kept": kept}, self.last_path)

    @property
    def ema_best_path(self) -> Path:
        return self.directory / f"{self.stem}_ema_best{self.suffix}"

    def save_ema_best(self, ema_model: nn.Module, *, epoch: int, metrics: dict[str, Any],
                      best_top1: float | None) -> Path:
        """The EMA weights at their best validated epoch: `<model>_ema_best`, loadable by validate.py."""
        self.write({**self.payload(ema_model, epoch, metrics, best_top1), "weights": "ema"}, self.ema_best_path)
        return self.ema_best_path

    def _save_epoch(self, payload: dict[str, Any], epoch: int, top1: float) -> None:
        path = self.directory / f"{self.stem}-{epoch}{self.suffix}"
        self.write(payload, path)
        score = float(epoch) if self.policy == "latest_k" else top1
        self.kept.append((score, epoch, path))
        self.kept.sort(key=lambda item: (item[0], item[1]))
        while len(self.kept) > self.keep_max:
            _, _, dropped = self.kept.pop(0)
            dropped.unlink(missing_ok=True)
            if dropped.suffix == ".safetensors":
                sidecar_path(dropped).unlink(missing_ok=True)
