"""The training order: seeded by (seed, epoch), sharded like DistributedSampler, resumable, and each image's
augmentation seeded by its place in the epoch (the same with or without workers)."""

from __future__ import annotations

import random

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from tunecv.data.sampler import EpochSampler, SeededSamples, ShardSampler, sample_seed


def _batches(sampler: EpochSampler, batch_size: int) -> list[list[tuple[int, int]]]:
    items = list(sampler)
    return [items[i:i + batch_size] for i in range(0, len(items), batch_size)]


def test_the_order_depends_on_seed_and_epoch_only():
    sampler = EpochSampler(20, seed=3)
    first = [i for i, _ in sampler]
    assert sorted(first) == list(range(20)) and first != list(range(20))
    assert [i for i, _ in EpochSampler(20, seed=3)] == first
    sampler.set_epoch(2)
    assert [i for i, _ in sampler] != first
    assert [i for i, _ in EpochSampler(20, seed=3, shuffle=False)] == list(range(20))


@pytest.mark.parametrize("size", [24, 23])
def test_ranks_together_draw_the_single_process_batches(size):
    """Rank r of 2 with batch 4 and one process with batch 8: the same images, under the same seeds, per step."""
    single = _batches(EpochSampler(size, seed=1), 8)
    ranks = [_batches(EpochSampler(size, seed=1, rank=r, world_size=2), 4) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1])  # equal step counts, or DDP would hang
    for step, batch in enumerate(single):
        assert sorted(ranks[0][step] + ranks[1][step])[:len(batch)] == sorted(batch) or size % 8
    assert {i for rank in ranks for batch in rank for i, _ in batch} == set(range(size))


def test_skip_resumes_inside_the_epoch():
    sampler = EpochSampler(20, seed=5, rank=1, world_size=2)
    sampler.set_epoch(3)
    whole = list(sampler)
    sampler.set_epoch(3, skip=4)
    assert list(sampler) == whole[4:] and len(sampler) == len(whole) - 4


def test_balanced_draw_sees_each_class_about_equally():
    targets = [0] * 90 + [1] * 10
    sampler = EpochSampler(100, seed=0, balanced_targets=targets)
    drawn = [targets[i] for epoch in range(1, 11) for i, _ in (sampler.set_epoch(epoch) or sampler)]
    assert 0.4 < sum(drawn) / len(drawn) < 0.6


def test_sample_seeds_are_distinct_and_stable():
    seeds = {sample_seed(7, epoch, place) for epoch in range(1, 4) for place in range(500)}
    assert len(seeds) == 1500 and sample_seed(7, 1, 0) == sample_seed(7, 1, 0)


def test_eval_shards_cover_every_image_once():
    shards = [list(ShardSampler(10, r, 3)) for r in range(3)]
    assert sorted(sum(shards, [])) == list(range(10))


class _RandomImages(Dataset):
    """Returns random numbers drawn the ways transforms draw them (python random, torch)."""

    def __len__(self) -> int:
        return 12

    def __getitem__(self, index: int):
        return torch.tensor([random.random(), torch.rand(()).item()]), index


def test_augmentation_is_the_same_with_and_without_workers():
    sampler = EpochSampler(12, seed=9)
    draws = []
    for workers in (0, 2):
        loader = DataLoader(SeededSamples(_RandomImages()), batch_size=4, sampler=sampler, num_workers=workers)
        draws.append(torch.cat([values for values, _ in loader]))
    assert torch.equal(draws[0], draws[1])


def test_seeding_leaves_the_training_loops_random_state_alone():
    torch.manual_seed(0)
    random.seed(0)
    expected = (torch.rand(3), random.random())
    torch.manual_seed(0)
    random.seed(0)
    # (a DataLoader without a generator of its own draws its workers' base seed from the global one)
    list(DataLoader(SeededSamples(_RandomImages()), batch_size=4, sampler=EpochSampler(12, seed=9),
                    generator=torch.Generator()))
    assert torch.equal(torch.rand(3), expected[0]) and random.random() == expected[1]


def test_repeated_augmentation_puts_each_copy_on_another_rank_under_its_own_seed():
    """aug_repeats 3 over 3 ranks (DeiT's setting): an epoch keeps its length, draws a third of the images, and
    the three copies of an image are on the three ranks at the same step, each with its own sample seed."""
    ranks = [list(EpochSampler(30, seed=2, rank=r, world_size=3, repeats=3)) for r in range(3)]
    assert [len(items) for items in ranks] == [10, 10, 10]
    for step in range(10):
        copies = [ranks[r][step] for r in range(3)]
        assert len({index for index, _ in copies}) == 1 and len({seed for _, seed in copies}) == 3
    assert len({index for items in ranks for index, _ in items}) == 10
    single = [index for index, _ in EpochSampler(30, seed=2, repeats=3)]
    assert single[:6:3] == [ranks[0][0][0], ranks[0][1][0]] and len(single) == 30
    resumed = EpochSampler(30, seed=2, rank=1, world_size=3, repeats=3)
    resumed.set_epoch(1, skip=4)
    assert list(resumed) == ranks[1][4:]
    assert [i for i, _ in EpochSampler(30, seed=2, repeats=1)] == [i for i, _ in EpochSampler(30, seed=2)]
