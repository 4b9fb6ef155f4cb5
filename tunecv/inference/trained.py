"""A checkpoint rebuilt: `load_trained` brings back the config, classes and model finetune.py saved, with the task
that knows its outputs (for validate.py, predict.py and export.py)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from torch import nn

from tunecv.config import Config, load_config
from tunecv.models.aux_heads import without_aux_heads
from tunecv.tasks import create_task
from tunecv.tasks.base import Task
from tunecv.train.checkpoint import load_checkpoint
from tunecv.utils.runtime import Compute, resolve_device


@dataclass
class Trained:
    """What a checkpoint rebuilds: its resolved config, classes and model, and the task that knows its outputs."""

    cfg: Config
    classes: list[str]
    model: nn.Module
    compute: Compute
    task: Task
    temperature: float = 1.0  # validate.py --calibrate's fit: probabilities are softmax(logits / temperature)
    category_ids: list[int] | None = None  # a detector's: the COCO category id of each class


def load_trained(ckpt_path: str, config_path: str | None, overrides: dict[str, Any],
                 cfg_options: list[str] | None = None) -> Trained:
    """The checkpoint's config < --config (with _base_ and --cfg-options) < flags; training-only rules are not
    checked. The model is on its device, in its memory format."""
    checkpoint = load_checkpoint(ckpt_path)
    saved = (checkpoint["config"], f"checkpoint {ckpt_path}")
    cfg = load_config(config_path, overrides, cfg_options, base_layers=(saved,), training=False)
    task = create_task(cfg)
    state = checkpoint["model"]
    if cfg.model.aux_factor > 0:  # auxiliary heads only train: inference and export leave them out
        cfg, state = replace(cfg, model=replace(cfg.model, aux_factor=0.0)), without_aux_heads(state)
    cfg = task.resolve_config(cfg)
    classes = list(checkpoint["classes"])
    model = task.load_model(cfg, classes, state, source=f"{ckpt_path} (model {cfg.model.model})")
    compute = Compute.create(resolve_device(cfg.train.device), cfg.train.amp_level, cfg.train.channels_last)
    return Trained(cfg, classes, compute.prepare_model(model), compute, task,
                   float(checkpoint.get("temperature", 1.0)), checkpoint.get("category_ids"))
