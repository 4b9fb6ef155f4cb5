"""Loaders: `create_loader(dataset, cfg.loader, is_training)`; workers, the dropped last batch, mixup. Must not know
the model; the order is `tunecv.data.sampler`'s."""

from __future__ import annotations

import logging
import random
import signal
from collections.abc import Callable

import numpy as np
import torch
from timm.data import Mixup
from torch.utils.data import DataLoader, Dataset, default_collate

from tunecv.config import LoaderConfig
from tunecv.data.sampler import EpochSampler, SeededSamples, ShardSampler
from tunecv.errors import UserError
from tunecv.utils import distributed
from tunecv.utils.runtime import available_cores, cores_per_process

logger = logging.getLogger(__name__)


def num_workers(requested: int) -> int:
    """Workers beyond this process's share of the cores only add contention."""
    return min(requested, cores_per_process()) if requested > 0 else 0


def _seed_worker(worker_id: int) -> None:
    # Ctrl-C reaches the whole process group: the workers keep serving while the main process saves and stops
    # (SIGTERM stays: multiprocessing ends its workers with it at exit)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def class_counts(targets: list[int], num_classes: int) -> list[int]:
    counts = [0] * num_classes
    for label in targets:
        counts[label] += 1
    return counts


def collate_skipping_none(batch: list):
    """default_collate without the samples that failed to decode (None); None when none is left."""
    kept = [sample for sample in batch if sample is not None]
    return default_collate(kept) if kept else None


def create_loader(dataset: Dataset, cfg: LoaderConfig, is_training: bool, *, seed: int = 0,
                  pin_memory: bool = False, persistent: bool = True, rank: int = 0, world_size: int = 1,
                  sampler: EpochSampler | None = None, collate_fn: Callable = collate_skipping_none) -> DataLoader:
    """Training loaders draw each epoch's order with an `EpochSampler` (seeded, sharded over `world_size`
    ranks, each image augmented under a seed of its own) and drop a last batch of one (BatchNorm cannot train on
    it), or of odd size under mixup; evaluation loaders keep the order, each rank its share. `sampler`: an
    EpochSampler for a loader that is not a training loader but augments (the feature cache's views).
    `persistent`: keep the workers between epochs (not for a loader run once). `collate_fn`: detection batches
    are lists."""
    if is_training and sampler is None:
        balanced = cfg.sampler == "balanced"
        sampler = EpochSampler(len(dataset), seed, shuffle=cfg.shuffle, rank=rank, world_size=world_size,
                               balanced_targets=dataset.targets if balanced else None, repeats=cfg.aug_repeats)
    per_rank = sampler.shard_size if sampler is not None else len(dataset)
    remainder = per_rank % cfg.batch_size
    mixing = cfg.mixup > 0 or cfg.cutmix > 0  # timm Mixup needs an even batch
    drop_last = is_training and (cfg.drop_remainder or remainder == 1 or (mixing and remainder % 2 == 1))
    generator = torch.Generator()
    generator.manual_seed(seed)
    workers = num_workers(cfg.num_parallel_workers)
    capped = f" (num_parallel_workers {cfg.num_parallel_workers}: {available_cores()} cores, " \
        f"{distributed.local_world_size()} process(es) here)" if workers < cfg.num_parallel_workers else ""
    logger.info("loader: %s, batch %d, %d workers%s%s%s%s", "train" if is_training else "eval", cfg.batch_size,
                workers, capped,
                ", last batch dropped" if drop_last and remainder else "",
                ", balanced sampler" if is_training and cfg.sampler == "balanced" else "",
                f", each image {cfg.aug_repeats} times (aug_repeats)" if is_training and cfg.aug_repeats > 1 else "")
    if sampler is None and world_size > 1:
        sampler = ShardSampler(len(dataset), rank, world_size)
    if is_training and per_rank // cfg.batch_size + (remainder > 0 and not drop_last) == 0:
        raise UserError(f"{len(dataset)} training images give no batch of {cfg.batch_size}; lower batch_size"
                        + (" or set drop_remainder false" if cfg.drop_remainder else ""))
    return DataLoader(
        SeededSamples(dataset) if isinstance(sampler, EpochSampler) else dataset,
        batch_size=cfg.batch_size,
        sampler=sampler,
        drop_last=drop_last,
        num_workers=workers,
        persistent_workers=persistent and workers > 0,
        pin_memory=pin_memory,
        worker_init_fn=_seed_worker,
        collate_fn=collate_fn,
        generator=generator,
    )


def create_mixup(cfg: LoaderConfig, num_classes: int, label_smoothing: float) -> Mixup | None:
    """timm Mixup/CutMix on batches, or None when both alphas are 0."""
    if cfg.mixup <= 0 and cfg.cutmix <= 0:
        return None
    logger.info("mixup: alpha %.2f, cutmix alpha %.2f, prob %.2f", cfg.mixup, cfg.cutmix, cfg.cutmix_prob)
    return Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, prob=cfg.cutmix_prob,
                 label_smoothing=label_smoothing, num_classes=num_classes)
