"""GPU input pipeline (timm's PrefetchLoader, for tunecv's (images, labels, indices) batches): workers hand over
uint8 images (4x less to collate, pin and copy), the device converts and normalises them, and the next batch is
copied on a side stream while the current one trains."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from timm.data.random_erasing import RandomErasing
from torch.utils.data import DataLoader

from tunecv.config import DataConfig
from tunecv.data.transforms import random_erasing
from tunecv.utils.runtime import Compute


class DevicePrefetcher:
    """Wraps a DataLoader of uint8 CHW images; yields float images on `device`, normalised, optionally
    channels_last and randomly erased (training). Works on any device; overlaps copies only on CUDA."""

    def __init__(self, loader: DataLoader, device: torch.device, mean: tuple[float, ...], std: tuple[float, ...],
                 channels_last: bool = False, erasing: RandomErasing | None = None) -> None:
        self.loader, self.device, self.channels_last = loader, device, channels_last
        shape = (1, len(mean), 1, 1)
        self.mean = torch.tensor([255.0 * m for m in mean], device=device).view(shape)
        self.std = torch.tensor([255.0 * s for s in std], device=device).view(shape)
        self.erasing = erasing
        self.stream = torch.cuda.Stream() if device.type == "cuda" else None

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name: str):
        if name == "loader":
            raise AttributeError(name)
        return getattr(self.loader, name)  # num_workers, sampler, drop_last, batch_size, dataset

    def _ready(self, batch: tuple) -> tuple:
        images = batch[0].to(self.device, non_blocking=True)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        images = images.float().sub_(self.mean).div_(self.std)
        if self.erasing is not None:
            images = self.erasing(images)
        return (images, *(item.to(self.device, non_blocking=True) for item in batch[1:]))

    def __iter__(self) -> Iterator[tuple | None]:
        if self.stream is None:
            for batch in self.loader:
                yield None if batch is None else self._ready(batch)
            return
        previous, first = None, True
        for batch in self.loader:
            with torch.cuda.stream(self.stream):
                ready = None if batch is None else self._ready(batch)
            if not first:
                yield previous
            first = False
            torch.cuda.current_stream().wait_stream(self.stream)  # the copy is done before the batch is used
            for tensor in ready or ():
                tensor.record_stream(torch.cuda.current_stream())  # allocated on the side stream, used on the main
            previous = ready
        if not first:
            yield previous


def on_device(loader: DataLoader, compute: Compute, cfg: DataConfig,
              is_training: bool) -> DataLoader | DevicePrefetcher:
    """On CUDA the loader's uint8 images (`create_transforms(uint8=True)`) go through a DevicePrefetcher."""
    if compute.device.type != "cuda":
        return loader
    erasing = random_erasing(cfg, str(compute.device)) if is_training and not cfg.no_aug and cfg.re_prob > 0 else None
    return DevicePrefetcher(loader, compute.device, tuple(cfg.mean), tuple(cfg.std), compute.channels_last, erasing)
