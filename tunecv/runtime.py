"""Run-time setup shared by the scripts: seeding and the device."""

from __future__ import annotations

import random

import numpy as np
import torch

from tunecv.errors import UserError


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device cuda was asked for but no CUDA GPU is visible; use --device cpu")
    return torch.device(name)


def image_mode(in_channels: int) -> str:
    modes = {1: "L", 3: "RGB"}
    if in_channels not in modes:
        raise UserError(f"in_channels {in_channels} is not supported for images; use 1 (grayscale) or 3 (RGB)")
    return modes[in_channels]
