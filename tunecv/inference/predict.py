"""Inference from a checkpoint: `load_trained` rebuilds the config, classes and model finetune.py saved (for
validate.py and predict.py); `collect_images` and `predict` run the model on any image files."""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from tunecv.config import Config, load_config
from tunecv.data import create_dataset, create_transforms, draft_size
from tunecv.data.datasets import IMAGE_EXTENSIONS, ImageDataset
from tunecv.errors import UserError
from tunecv.models.factory import create_model
from tunecv.models.weights import load_exact
from tunecv.train.checkpoint import load_checkpoint
from tunecv.train.engine import Compute
from tunecv.utils.progress import progress_bar
from tunecv.utils.runtime import image_mode, resolve_device


@dataclass
class Trained:
    cfg: Config
    classes: list[str]
    model: nn.Module
    compute: Compute
    temperature: float = 1.0  # validate.py --calibrate's fit: probabilities are softmax(logits / temperature)
    category_ids: list[int] | None = None  # a detector's: the COCO category id of each class

    @property
    def detection(self) -> bool:
        return self.cfg.model.task == "detection"


def load_trained(ckpt_path: str, config_path: str | None, overrides: dict[str, Any],
                 cfg_options: list[str] | None = None) -> Trained:
    """The checkpoint's config < --config (with _base_ and --cfg-options) < flags; training-only rules are not
    checked. The model is on its device, in its memory format."""
    checkpoint = load_checkpoint(ckpt_path)
    saved = (checkpoint["config"], f"checkpoint {ckpt_path}")
    cfg = load_config(config_path, overrides, cfg_options, base_layers=(saved,), training=False)
    classes = list(checkpoint["classes"])
    source = f"{ckpt_path} (model {cfg.model.model})"
    if cfg.model.task == "detection":
        from tunecv.detection.inference import load_detector

        compute = Compute.create(resolve_device(cfg.train.device), cfg.train.amp_level, channels_last=False)
        model = compute.prepare_model(load_detector(cfg, classes, checkpoint["model"], source))
        return Trained(cfg, classes, model, compute, category_ids=checkpoint.get("category_ids"))
    model = create_model(cfg.model, num_classes=len(classes))
    load_exact(model, checkpoint["model"], source=source)
    compute = Compute.create(resolve_device(cfg.train.device), cfg.train.amp_level, cfg.train.channels_last)
    return Trained(cfg, classes, compute.prepare_model(model), compute, float(checkpoint.get("temperature", 1.0)))


def split_dataset(trained: Trained, split: str, uint8: bool = False) -> ImageDataset:
    """A split of the checkpoint's data (or the overridden data_dir) with its evaluation transform and classes.
    `uint8`: tensors the GPU normalises (DevicePrefetcher)."""
    cfg = trained.cfg
    return create_dataset(cfg.data, split, create_transforms(cfg.data, is_training=False, uint8=uint8),
                          classes=trained.classes, image_mode=image_mode(cfg.model.in_channels),
                          draft_size=draft_size(cfg.data, False))


def files_dataset(trained: Trained, paths: list[Path], uint8: bool = False) -> ImageDataset:
    """Any image files with the checkpoint's evaluation transform (label 0: unknown); a file that does not decode
    is skipped (its item is None)."""
    cfg = trained.cfg
    return ImageDataset([(str(p), 0) for p in paths], trained.classes,
                        create_transforms(cfg.data, is_training=False, uint8=uint8),
                        image_mode=image_mode(cfg.model.in_channels), skip_unreadable=True,
                        draft_size=draft_size(cfg.data, False))


def collect_images(inputs: list[str]) -> list[Path]:
    """Image files from files, folders (recursively, by extension) and glob patterns, in the given order, each
    once. A path or pattern that names nothing is an error."""
    found: dict[Path, None] = {}
    for item in inputs:
        matches = [Path(m) for m in sorted(glob.glob(item, recursive=True))] if glob.has_magic(item) else [Path(item)]
        if not matches or not matches[0].exists():
            raise UserError(f"{item}: no such file, folder or matching image; check the path")
        for path in matches:
            if path.is_dir():
                found.update(dict.fromkeys(sorted(p for p in path.rglob("*") if p.is_file()
                                                  and p.suffix.lower() in IMAGE_EXTENSIONS)))
            elif path.is_file():
                found[path] = None
    if not found:
        raise UserError(f"no image files in {' '.join(inputs)}; give image files, folders or patterns")
    return list(found)


@torch.inference_mode()
def predict(model: nn.Module, loader: DataLoader, compute: Compute, tta: bool = False,
            temperature: float = 1.0) -> dict[int, torch.Tensor]:
    """Class probabilities, softmax(logits / temperature), per dataset index (images that fail to decode have
    none); `tta`: the average with the horizontally flipped image's."""
    model.eval()
    probabilities: dict[int, torch.Tensor] = {}
    for batch in progress_bar(loader, desc="predict"):
        if batch is None:
            continue
        inputs = compute.inputs(batch[0])
        with compute.autocast():
            probs = (model(inputs).float() / temperature).softmax(dim=1)
            if tta:
                probs = (probs + (model(inputs.flip(-1)).float() / temperature).softmax(dim=1)) / 2
        probabilities.update(zip(batch[2].tolist(), probs.cpu()))
    return probabilities


def top_k(probs: torch.Tensor, classes: list[str], k: int) -> list[tuple[str, float]]:
    values, indices = probs.topk(min(k, len(classes)))
    return [(classes[i], round(float(v), 6)) for v, i in zip(values, indices.tolist())]
