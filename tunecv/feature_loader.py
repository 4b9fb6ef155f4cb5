"""Loaders of stored features (`tunecv.feature_cache`): each epoch's batches in the image loader's order, and
the view of each image (a flip, or one of N augmented copies) drawn per epoch."""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import torch
from torch.utils.data import DataLoader, Dataset

if TYPE_CHECKING:
    from tunecv.feature_cache import FeatureExtractor

logger = logging.getLogger(__name__)


class IndexSet(Dataset):
    """Dataset indices with the image dataset's labels: a DataLoader over it draws the image loader's order."""

    def __init__(self, targets: list[int]) -> None:
        self.targets = targets

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> int:
        return index


class FeatureLoader:
    """Batches of (features, labels, indices) like the image loader's: `views` image loaders, each run once on
    first use; `order` (a DataLoader over an IndexSet built as the image loader is, with its seed) gives each
    epoch's batches of dataset indices, so shuffling and sampling match the uncached run; `pick` draws a view per
    image and epoch."""

    def __init__(self, extractor: FeatureExtractor, views: list[DataLoader], order: DataLoader,
                 pick: Callable[[int, int, torch.Generator], torch.Tensor], seed: int, desc: str,
                 persistent_workers: bool = False) -> None:
        self.extractor, self.views, self.order, self.pick = extractor, views, order, pick
        self.num_views, self.persistent_workers = len(views), persistent_workers
        self.generator = torch.Generator().manual_seed(seed)  # the views' draws, apart from the order's
        self.desc, self.epoch = desc, 0
        self.features: torch.Tensor | None = None  # (views, rows, dim)
        self.num_workers = views[0].num_workers

    def __len__(self) -> int:
        return len(self.order)

    def compute(self) -> None:
        start = time.perf_counter()
        outputs = [self.extractor(loader, f"{self.desc} features {i + 1}/{len(self.views)}")
                   for i, loader in enumerate(self.views)]
        self.features = torch.stack([features for features, _, _ in outputs])
        self.labels, self.indices = outputs[0][1], outputs[0][2]
        self.views = []  # run once: their workers can go
        # dataset index -> feature row (-1: the image failed to decode and has no features, as it has no batch slot)
        self.row_of = torch.full((len(self.order.dataset),), -1, dtype=torch.long)
        self.row_of[self.indices.cpu()] = torch.arange(len(self.indices))
        logger.info("feature cache: %s, %d view%s x %d images x %s features in %.1f s", self.desc, self.num_views,
                    "s" if self.num_views > 1 else "", len(self.labels), "x".join(map(str, self.features.shape[2:])),
                    time.perf_counter() - start)

    def epoch_order(self) -> Iterator[torch.Tensor]:
        """The next epoch's batches of dataset indices, drawn as the image loader draws them: a DataLoader takes
        its workers' base seed from the generator when it starts an iterator, each epoch, or only the first with
        persistent workers; then its sampler draws the order from the same generator."""
        if self.epoch <= 1 or not self.persistent_workers:
            torch.empty((), dtype=torch.int64).random_(generator=self.order.generator)
        for indices in self.order.batch_sampler:
            yield torch.as_tensor(indices, dtype=torch.long)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None]:
        if self.features is None:
            self.compute()
        self.epoch += 1
        view = self.pick(self.epoch, len(self.labels), self.generator)
        device = self.features.device
        for batch in self.epoch_order():
            rows = self.row_of[batch]
            rows = rows[rows >= 0]
            if not len(rows):
                yield None  # as the image loader does for a batch whose every image failed
                continue
            views, rows = view[rows].to(device), rows.to(device)
            yield self.features[views, rows], self.labels[rows], self.indices[rows]


def flip_views(hflip: float, vflip: float) -> tuple[list[tuple[int, int]], Callable]:
    """The (horizontal, vertical) flip combinations a no_aug transform can produce, and a picker drawing one per
    image with the configured probabilities: the uncached pipeline's distribution, exactly."""
    combos = list(itertools.product((0, 1) if hflip else (0,), (0, 1) if vflip else (0,)))
    verticals = 2 if vflip else 1

    def pick(epoch: int, size: int, generator: torch.Generator) -> torch.Tensor:
        h = (torch.rand(size, generator=generator) < hflip).long()
        v = (torch.rand(size, generator=generator) < vflip).long()
        return h * verticals + v

    return combos, pick


def cycle_views(views: int) -> Callable:
    def pick(epoch: int, size: int, generator: torch.Generator) -> torch.Tensor:
        return torch.full((size,), (epoch - 1) % views, dtype=torch.long)
    return pick
