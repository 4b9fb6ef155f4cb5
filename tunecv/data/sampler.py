"""The training order: `EpochSampler`, seeded by (seed, epoch), sharded over distributed ranks, resumable mid-epoch.

Each drawn image comes with a seed of its own, derived from (seed, epoch, its place in the epoch), and
`SeededSamples` runs its augmentation under that seed: the same crops and flips with any number of workers or
ranks, and after a resume, where a DataLoader's worker seeds would differ.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler, get_worker_info


def sample_seed(seed: int, epoch: int, position: int) -> int:
    """A 63-bit seed per (run seed, epoch, place in the epoch's global order); deterministic across processes
    (the hash of a tuple of ints is not randomised)."""
    return hash((seed, epoch, position)) & (2**63 - 1)


class EpochSampler(Sampler):
    """Yields (dataset index, sample seed) pairs. The epoch's global order is a permutation (`shuffle`), a
    class-balanced draw with replacement (`balanced`: each class seen equally often) or the dataset order, drawn
    from (seed, epoch) alone; it is padded to a multiple of `world_size` and rank r takes places r, r + world_size,
    ... (as torch's DistributedSampler), so the ranks' batches together are the single-process batch of
    world_size times the size. `set_epoch(epoch, skip)` starts an epoch `skip` samples in (a resumed run)."""

    def __init__(self, size: int, seed: int, *, shuffle: bool = True, balanced_targets: list[int] | None = None,
                 rank: int = 0, world_size: int = 1, repeats: int = 1) -> None:
        """`balanced_targets`: the labels, for the class-balanced draw. `repeats`: repeated augmentation (timm's
        RepeatAugSampler, here seeded and resumable): each drawn index comes `repeats` times in a row, so its
        copies fall on consecutive ranks, each with its own sample seed; the epoch keeps its length, so it sees
        1/repeats of the images."""
        self.size, self.seed, self.shuffle, self.targets = size, seed, shuffle, balanced_targets
        self.rank, self.world_size, self.repeats = rank, world_size, max(repeats, 1)
        self.epoch, self.skip = 1, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def order(self, epoch: int) -> torch.Tensor:
        """The epoch's global order of dataset indices (before padding and sharding)."""
        return self._draw(epoch).repeat_interleave(self.repeats)[:self.size]

    def _draw(self, epoch: int) -> torch.Tensor:
        count = self.size
        generator = torch.Generator().manual_seed(sample_seed(self.seed, epoch, -1))
        if self.targets is not None:
            sizes = torch.bincount(torch.as_tensor(self.targets))
            weights = 1.0 / sizes[torch.as_tensor(self.targets)].double()
            return torch.multinomial(weights, count, replacement=True, generator=generator)
        if self.shuffle:
            return torch.randperm(count, generator=generator)
        return torch.arange(count)

    @property
    def shard_size(self) -> int:
        return math.ceil(self.size / self.world_size)

    def __len__(self) -> int:
        return max(self.shard_size - self.skip, 0)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = self.order(self.epoch).tolist()
        places = range(self.rank + self.skip * self.world_size, self.shard_size * self.world_size, self.world_size)
        for place in places:
            yield order[place % len(order)], sample_seed(self.seed, self.epoch, place)


class ShardSampler(Sampler):
    """Evaluation: rank r takes images r, r + world_size, ...; every image once, no padding (the ranks' metrics
    are summed, so a duplicate would count twice)."""

    def __init__(self, size: int, rank: int, world_size: int) -> None:
        self.indices = range(rank, size, world_size)

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)


class SeededSamples(Dataset):
    """A dataset read through (index, seed) pairs: each sample is transformed under its own seed. Attributes
    (targets, classes, transform, ...) are the wrapped dataset's."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name: str):
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, item: tuple[int, int]):
        index, seed = item
        with seeded(seed):
            return self.dataset[index]


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Python, NumPy and torch (CPU) random numbers from `seed`; in the main process (no workers) the training
    loop's own random state (dropout, mixup) is put back afterwards."""
    main = get_worker_info() is None
    saved = (random.getstate(), np.random.get_state(), torch.random.get_rng_state()) if main else None
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.random.default_generator.manual_seed(seed)
    try:
        yield
    finally:
        if saved is not None:
            random.setstate(saved[0])
            np.random.set_state(saved[1])
            torch.random.set_rng_state(saved[2])
