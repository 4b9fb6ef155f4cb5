"""The config of a `task: detection` run: which keys it honours (any other key set is an error, not a silent
no-op), the rules between them, and the paths and counts derived from them."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from tunecv.config.schema import DETECTION_KEYS, SECTIONS, Config
from tunecv.data.datasets import data_path
from tunecv.errors import UserError

# keys only detection reads: set in a classification run, they would do nothing
DETECTION_ONLY_KEYS = ("train_ann_file", "val_ann_file", "keep_empty_images", "min_size", "max_size",
                       "trainable_backbone_layers")
DETECTION_METRICS = ("bbox_mAP", "bbox_mAP50", "segm_mAP", "segm_mAP50")


def changed_keys(cfg: Config) -> list[str]:
    """The keys whose value is not the default."""
    default = Config()
    return [f.name for section in SECTIONS for f in dataclasses.fields(SECTIONS[section])
            if getattr(getattr(cfg, section), f.name) != getattr(getattr(default, section), f.name)]


def check_task_keys(cfg: Config) -> None:
    """Each key set must be one the task reads."""
    changed = changed_keys(cfg)
    if cfg.model.task == "detection":
        foreign = [key for key in changed if key not in DETECTION_KEYS]
        if foreign:
            raise UserError(f"{', '.join(foreign)} {'is a key' if len(foreign) == 1 else 'are keys'} of "
                            "classification, which task: detection does not use; remove "
                            f"{'it' if len(foreign) == 1 else 'them'}")
        return
    foreign = [key for key in changed if key in DETECTION_ONLY_KEYS]
    if cfg.train.best_metric in DETECTION_METRICS:
        foreign.append(f"best_metric {cfg.train.best_metric}")
    if foreign:
        raise UserError(f"{', '.join(foreign)} {'applies' if len(foreign) == 1 else 'apply'} to task: detection; "
                        "remove it, or set task: detection")


def resolve_detection(cfg: Config) -> Config:
    """Check the rules between detection keys; the config with its data paths expanded."""
    from tunecv.detection.models import detector_spec

    spec = detector_spec(cfg.model.model)
    data, ft = cfg.data, cfg.finetune
    if not data.data_dir:
        raise UserError("data_dir is not set; pass --data_dir DIR (DIR/annotations/instances_<split>.json and "
                        "DIR/<split>/ images, or set train_ann_file / image_root)")
    if not data.min_size or min(data.min_size) < 32:
        raise UserError(f"min_size takes one or more sizes of at least 32 px, got {list(data.min_size)}")
    if max(data.min_size) > data.max_size:
        raise UserError(f"min_size {max(data.min_size)} is larger than max_size {data.max_size}; the shorter side "
                        "cannot exceed the longer one's bound")
    if ft.trainable_backbone_layers is not None and ft.frozen_stages != -1:
        raise UserError("frozen_stages and trainable_backbone_layers both say how much of the backbone trains; "
                        "set one of them")
    trainable_layers(cfg.finetune, spec.backbone_layers)  # checks the range
    if cfg.train.best_metric.startswith("segm") and not spec.masks:
        raise UserError(f"best_metric {cfg.train.best_metric} needs masks; {cfg.model.model} predicts boxes only "
                        "(use bbox_mAP, or a maskrcnn model)")
    if cfg.optim.lr == "auto":
        raise UserError("lr: auto (the LR range test) works for classification; give detection a number, e.g. "
                        "SGD 0.02 for a batch of 16 (MMDetection's), scaled by auto_scale_lr")
    if cfg.train.best_metric == "top1":
        raise UserError("best_metric top1 is a classification metric; use bbox_mAP, bbox_mAP50, segm_mAP or "
                        "segm_mAP50")
    return dataclasses.replace(cfg, data=dataclasses.replace(data, data_dir=str(Path(data.data_dir).expanduser())))


def trainable_layers(ft, most: int) -> int | None:
    """torchvision's trainable_backbone_layers from either key: MMDetection's frozen_stages N freezes the stem and
    N stages, leaving most - 1 - N (None: every stage trains)."""
    trainable = ft.trainable_backbone_layers
    if trainable is None and ft.frozen_stages >= 0:
        trainable = most - 1 - ft.frozen_stages
        if trainable < 0:
            raise UserError(f"frozen_stages {ft.frozen_stages} is more than this detector's backbone has "
                            f"(0..{most - 1})")
    if trainable is not None and trainable > most:
        raise UserError(f"trainable_backbone_layers {trainable} is out of range for this detector (0..{most})")
    return trainable


def best_metric(cfg: Config) -> str:
    return "bbox_mAP" if cfg.train.best_metric == "auto" else cfg.train.best_metric


def ann_file(cfg: Config, split: str, given: str | None) -> Path:
    """`given`, or the COCO convention annotations/instances_<split>.json; a relative path is found under
    data_dir first, then the working directory."""
    return data_path(cfg.data, given or str(Path("annotations") / f"instances_{split}.json"))


def image_dir(cfg: Config, split: str) -> Path:
    """Where a split's `file_name`s are: <image_root or data_dir>/<split> (COCO's train2017/, Cityscapes'
    leftImg8bit/train/); a relative image_root is found as a relative ann file is."""
    return (data_path(cfg.data, cfg.data.image_root) if cfg.data.image_root else Path(cfg.data.data_dir)) / split
