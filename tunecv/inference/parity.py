"""export.py's parity inputs: up to eight real images (--images, else the checkpoint's validation split), random
ones when neither is here."""

from __future__ import annotations

import logging
from collections.abc import Iterable

import torch

from tunecv.config import UserError
from tunecv.data.datasets import ImageDataset
from tunecv.inference.predict import collect_images, files_dataset, split_dataset
from tunecv.tasks.base import TrainedModel

logger = logging.getLogger(__name__)

PARITY_IMAGES = 8


def parity_batch(trained: TrainedModel, image_paths: list[str] | None) -> tuple[torch.Tensor, str]:
    """Up to 8 preprocessed images and where they came from."""
    if image_paths:
        paths = collect_images(image_paths)
        images, source = _first_decodable(files_dataset(trained, paths), range(len(paths))), "images"
        if not images:
            raise UserError(f"none of the {len(paths)} --images files decode; give readable images")
    else:
        images, source = _val_images(trained), "val split"
    if not images:
        cfg = trained.cfg
        size = (PARITY_IMAGES, cfg.model.in_channels, cfg.data.image_resize, cfg.data.image_resize)
        return torch.randn(size, generator=torch.Generator().manual_seed(0)), "random"
    return torch.stack(images), source


def _val_images(trained: TrainedModel) -> list[torch.Tensor]:
    split = trained.cfg.data.val_split
    try:
        dataset = split_dataset(trained, split)
    except (UserError, OSError) as err:  # the data stayed on the training machine
        logger.warning("parity check on random inputs: no %s images here (%s); give --images for a check on real "
                       "images", split, err)
        return []
    dataset.skip_unreadable = True  # one bad file need not stop an export
    # spread over the split: a folder layout lists one class after another
    step = max(len(dataset) / PARITY_IMAGES, 1)
    return _first_decodable(dataset, sorted({int(i * step) for i in range(min(PARITY_IMAGES, len(dataset)))}))


def _first_decodable(dataset: ImageDataset, indices: Iterable[int]) -> list[torch.Tensor]:
    images = []
    for index in indices:
        item = dataset[index]
        if item is not None:
            images.append(item[0])
        if len(images) == PARITY_IMAGES:
            break
    return images
