"""Loaders: batches, the dropped batch of one, seeded shuffling, mixup."""

from __future__ import annotations

import dataclasses
import os

import pytest
import torch
from torch.utils.data import TensorDataset

from tunecv.config import LoaderConfig
from tunecv.data import create_dataset, create_transforms
from tunecv.data.loader import create_loader, create_mixup, num_workers
from tunecv.errors import UserError
from tunecv.utils.runtime import available_cores, cores_per_process


def _data(n: int) -> TensorDataset:
    return TensorDataset(torch.arange(n, dtype=torch.float32)[:, None], torch.arange(n))


def _cfg(**kwargs) -> LoaderConfig:
    return LoaderConfig(**{"batch_size": 4, "num_parallel_workers": 0, **kwargs})


def _sizes(loader) -> list[int]:
    return [len(targets) for _, targets, *_ in loader]


def test_training_drops_a_last_batch_of_one():
    assert _sizes(create_loader(_data(9), _cfg(), is_training=True)) == [4, 4]


def test_training_keeps_a_last_batch_of_two_or_more():
    assert _sizes(create_loader(_data(10), _cfg(), is_training=True)) == [4, 4, 2]


def test_eval_keeps_every_image():
    loader = create_loader(_data(9), _cfg(drop_remainder=True), is_training=False)
    assert _sizes(loader) == [4, 4, 1]
    assert torch.cat([targets for _, targets, *_ in loader]).tolist() == list(range(9))  # in order


def test_drop_remainder():
    assert _sizes(create_loader(_data(10), _cfg(drop_remainder=True), is_training=True)) == [4, 4]


def test_a_training_loader_without_a_batch_is_one_sentence():
    with pytest.raises(UserError, match=r"^3 training images give no batch of 4; lower batch_size or set "
                                        r"drop_remainder false$"):
        create_loader(_data(3), _cfg(drop_remainder=True), is_training=True)
    with pytest.raises(UserError, match=r"^1 training images give no batch of 4; lower batch_size$"):
        create_loader(_data(1), _cfg(), is_training=True)  # a batch of one is dropped whatever drop_remainder says
    assert _sizes(create_loader(_data(1), _cfg(), is_training=False)) == [1]


def test_mixup_drops_an_odd_last_batch():
    assert _sizes(create_loader(_data(11), _cfg(mixup=0.2), is_training=True)) == [4, 4]


def test_shuffle_seeded():
    def order(seed: int) -> list[int]:
        return torch.cat([t for _, t in create_loader(_data(20), _cfg(), True, seed=seed)]).tolist()

    assert order(1) == order(1)
    assert order(1) != order(2)
    assert sorted(order(1)) == list(range(20))
    unshuffled = create_loader(_data(20), _cfg(shuffle=False), is_training=True)
    assert torch.cat([t for _, t in unshuffled]).tolist() == list(range(20))


def test_workers_capped_and_give_the_same_batches():
    loader = create_loader(_data(8), _cfg(num_parallel_workers=64), is_training=False)
    assert loader.num_workers == min(64, available_cores())
    assert torch.cat([t for _, t, *_ in loader]).tolist() == list(range(8))


def test_cores_are_shared_among_the_local_processes():
    assert cores_per_process(cores=16, processes=1) == 16
    assert cores_per_process(cores=32, processes=8) == 4
    assert cores_per_process(cores=2, processes=4) == 1  # a launcher that pins each rank has divided them already


def test_workers_follow_the_affinity_and_torchrun_local_world_size(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5}, raising=False)
    assert available_cores() == 6 and num_workers(8) == 6 and num_workers(0) == 0
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert num_workers(8) == 3 and num_workers(2) == 2
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "not a number")
    assert num_workers(8) == 6


def test_create_mixup():
    assert create_mixup(_cfg(), 3, 0.1) is None
    mixup = create_mixup(dataclasses.replace(_cfg(), cutmix=1.0), 3, 0.1)
    inputs, targets = mixup(torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 0]))
    assert targets.shape == (4, 3) and torch.allclose(targets.sum(dim=1), torch.ones(4))


def test_folder_pipeline_gives_normalised_batches(tiny_cfg):
    # dataset → transforms → loader on real PNG files, as finetune.py chains them
    train = create_dataset(tiny_cfg.data, "train", create_transforms(tiny_cfg.data, is_training=True))
    loader = create_loader(train, tiny_cfg.loader, is_training=True, seed=0)
    batches = list(loader)
    assert len(batches) == len(train) // 4 == 6
    images, labels, indices = batches[0]
    assert sorted(torch.cat([b[2] for b in batches]).tolist()) == list(range(len(train)))
    assert images.shape == (4, 3, 32, 32) and images.dtype == torch.float32
    assert labels.dtype == torch.int64 and set(torch.cat([b[1] for b in batches]).tolist()) == {0, 1, 2}
    assert -3 < images.mean().item() < 3 and images.std().item() > 0.1


def test_collate_drops_samples_that_failed_to_decode():
    from tunecv.data.loader import collate_skipping_none

    batch = collate_skipping_none([(torch.zeros(3), 0, 0), None, (torch.ones(3), 1, 2)])
    assert batch[0].shape == (2, 3) and batch[1].tolist() == [0, 1] and batch[2].tolist() == [0, 2]
    assert collate_skipping_none([None, None]) is None
