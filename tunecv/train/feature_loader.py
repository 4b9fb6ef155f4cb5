"""Loaders of stored features (`tunecv.train.feature_cache`): each epoch's batches in the image loader's order, and
the view of each image (a flip, or one of N augmented copies) drawn per epoch."""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterator

import torch
from torch.utils.data import BatchSampler, DataLoader

from tunecv.data.sampler import sample_seed

# what computes a view's outputs of the frozen layers (tunecv.train.feature_cache.FeatureExtractor):
# (loader, description) -> (features, labels, dataset indices)
Extractor = Callable[[DataLoader, str], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]

logger = logging.getLogger(__name__)


class FeatureLoader:
    """Batches of (features, labels, indices) like the image loader's: `views` image loaders, each run once on
    first use; `batch_sampler` (batches of the image loader's sampler: an EpochSampler for training) gives each epoch's
    batches of dataset indices, so shuffling, sampling, sharding and resuming match the uncached run; `pick`
    draws a view per image and epoch, seeded by (seed, epoch). `kept`: outputs an earlier run in this process
    computed under the same key (a `tunecv.train.feature_memo.FeatureMemo`'s), read instead of computed, and
    filled otherwise."""

    def __init__(self, extractor: Extractor, views: list[DataLoader], batch_sampler: BatchSampler,
                 pick: Callable[[int, int, torch.Generator], torch.Tensor], seed: int, desc: str,
                 kept: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None = None) -> None:
        self.extractor, self.views, self.batch_sampler, self.pick = extractor, views, batch_sampler, pick
        self.kept = kept
        self.sampler, self.num_views, self.seed, self.desc = batch_sampler.sampler, len(views), seed, desc
        self.features: torch.Tensor | None = None  # (views, rows, dim)
        self.size, self.num_workers = len(views[0].dataset), views[0].num_workers

    def __len__(self) -> int:
        return len(self.batch_sampler)

    def compute(self) -> None:
        start = time.perf_counter()
        earlier = self.kept.get(self.desc) if self.kept is not None else None
        if earlier is not None:
            self.features, self.labels, self.indices = earlier
        else:
            outputs = [self.extractor(loader, f"{self.desc} features {i + 1}/{len(self.views)}")
                       for i, loader in enumerate(self.views)]
            self.features = torch.stack([features for features, _, _ in outputs])
            self.labels, self.indices = outputs[0][1], outputs[0][2]
            if self.kept is not None:
                self.kept[self.desc] = (self.features, self.labels, self.indices)
        self.views = []  # run once: their workers can go
        # dataset index -> feature row (-1: the image failed to decode and has no features, as it has no batch slot)
        self.row_of = torch.full((self.size,), -1, dtype=torch.long)
        self.row_of[self.indices.cpu()] = torch.arange(len(self.indices))
        logger.info("feature cache: %s, %d view%s x %d images x %s features %s", self.desc, self.num_views,
                    "s" if self.num_views > 1 else "", len(self.labels), "x".join(map(str, self.features.shape[2:])),
                    "kept from an earlier run in this process" if earlier is not None
                    else f"in {time.perf_counter() - start:.1f} s")

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None]:
        if self.features is None:
            self.compute()
        epoch = getattr(self.sampler, "epoch", 1)
        view = self.pick(epoch, len(self.labels), torch.Generator().manual_seed(sample_seed(self.seed, epoch, -2)))
        device = self.features.device
        for batch in self.batch_sampler:
            indices = torch.as_tensor([item[0] if isinstance(item, tuple) else item for item in batch])
            rows = self.row_of[indices]
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
