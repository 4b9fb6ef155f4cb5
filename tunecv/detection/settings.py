"""The paths and counts a `task: detection` run derives from its config: annotation files, image folders, how
much of the backbone trains. (Which keys detection reads, and their rules: `tunecv.config.rules`.)"""

from __future__ import annotations

from pathlib import Path

from tunecv.config import Config
from tunecv.data.datasets import data_path
from tunecv.errors import UserError


def trainable_layers(cfg: Config, most: int) -> int | None:
    """torchvision's trainable_backbone_layers from either key: MMDetection's frozen_stages N freezes the stem and
    N stages, leaving most - 1 - N (None: every stage trains)."""
    trainable, frozen_stages = cfg.detection.trainable_backbone_layers, cfg.finetune.frozen_stages
    if trainable is None and frozen_stages >= 0:
        trainable = most - 1 - frozen_stages
        if trainable < 0:
            raise UserError(f"frozen_stages {frozen_stages} is more than this detector's backbone has "
                            f"(0..{most - 1})")
    if trainable is not None and trainable > most:
        raise UserError(f"trainable_backbone_layers {trainable} is out of range for this detector (0..{most})")
    return trainable


def ann_file(cfg: Config, split: str, given: str | None) -> Path:
    """`given`, or the COCO convention annotations/instances_<split>.json; a relative path is found under
    data_dir first, then the working directory."""
    return data_path(cfg.data, given or str(Path("annotations") / f"instances_{split}.json"))


def image_dir(cfg: Config, split: str) -> Path:
    """Where a split's `file_name`s are: <image_root or data_dir>/<split> (COCO's train2017/, Cityscapes'
    leftImg8bit/train/); a relative image_root is found as a relative ann file is."""
    return (data_path(cfg.data, cfg.data.image_root) if cfg.data.image_root else Path(cfg.data.data_dir)) / split
