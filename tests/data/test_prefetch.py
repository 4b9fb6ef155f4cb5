"""DevicePrefetcher: uint8 batches normalised on the device equal the float pipeline's (tested on the CPU)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from conftest import CLASSES, TINY_MODEL, TRAIN_PER_CLASS, run_config
from tunecv.data.datasets import create_dataset
from tunecv.data.loader import collate_skipping_none, create_loader
from tunecv.data.prefetch import DevicePrefetcher
from tunecv.data.transforms import create_transforms, random_erasing

CPU = torch.device("cpu")


def _cfg(data_dir: Path, **overrides):
    return run_config({"data_dir": str(data_dir), "model": TINY_MODEL, "image_resize": 32, "batch_size": 4,
                              "num_parallel_workers": 0, **overrides})


def _loader(cfg, uint8: bool, split: str = "val", **kwargs):
    dataset = create_dataset(cfg.data, split, create_transforms(cfg.data, is_training=False, uint8=uint8))
    return create_loader(dataset, cfg.loader, is_training=False, **kwargs)


@pytest.mark.parametrize("mean, std", [(None, None), ((0.5, 0.25, 0.75), (0.2, 0.3, 0.4))])
def test_uint8_batches_normalised_like_the_float_pipeline(tiny_image_folder, mean, std):
    cfg = _cfg(tiny_image_folder, **({"mean": list(mean), "std": list(std)} if mean else {}))
    uint8_loader, float_loader = _loader(cfg, uint8=True), _loader(cfg, uint8=False)
    first = next(iter(uint8_loader))
    assert first[0].dtype == torch.uint8 and first[0].shape == (4, 3, 32, 32)
    prefetcher = DevicePrefetcher(uint8_loader, CPU, tuple(cfg.data.mean), tuple(cfg.data.std))
    batches = list(prefetcher)
    expected = list(float_loader)
    assert len(batches) == len(expected) == len(prefetcher) == len(float_loader) == 3
    for (images, labels, indices), (images0, labels0, indices0) in zip(batches, expected):
        assert images.dtype == torch.float32 and images.device.type == "cpu"
        assert torch.allclose(images, images0, atol=1e-6, rtol=0), (images - images0).abs().max()
        assert torch.equal(labels, labels0) and torch.equal(indices, indices0)


def test_channels_last_and_attributes(tiny_image_folder):
    cfg = _cfg(tiny_image_folder)
    loader = _loader(cfg, uint8=True, split="train")
    prefetcher = DevicePrefetcher(loader, CPU, tuple(cfg.data.mean), tuple(cfg.data.std), channels_last=True)
    assert len(prefetcher) == len(loader) == len(CLASSES) * TRAIN_PER_CLASS // 4
    assert prefetcher.num_workers == loader.num_workers == 0
    assert prefetcher.drop_last is loader.drop_last and prefetcher.batch_size == 4
    assert prefetcher.dataset is loader.dataset and prefetcher.sampler is loader.sampler
    with pytest.raises(AttributeError):
        prefetcher.no_such_attribute  # noqa: B018
    images = next(iter(prefetcher))[0]
    assert images.is_contiguous(memory_format=torch.channels_last) and images.dtype == torch.float32


def test_random_erasing_on_the_device(tiny_image_folder):
    cfg = _cfg(tiny_image_folder)
    erasing = random_erasing(replace(cfg.data, re_prob=1.0), "cpu")
    prefetcher = DevicePrefetcher(_loader(cfg, uint8=True), CPU, tuple(cfg.data.mean), tuple(cfg.data.std),
                                  erasing=erasing)
    plain = list(_loader(cfg, uint8=False))
    torch.manual_seed(0)
    erased = list(prefetcher)
    assert all(not torch.allclose(a[0], b[0], atol=1e-6) for a, b in zip(erased, plain))


def test_none_batches_pass_through(tiny_image_folder):
    cfg = _cfg(tiny_image_folder, on_bad_image="skip")
    dataset = create_dataset(cfg.data, "val", create_transforms(cfg.data, is_training=False, uint8=True))
    broken = Path(dataset.samples[1][0])
    broken.write_bytes(broken.read_bytes()[:40])  # after the scan: fails to decode mid-run
    loader = torch.utils.data.DataLoader(dataset, batch_size=1, collate_fn=collate_skipping_none)
    batches = list(DevicePrefetcher(loader, CPU, tuple(cfg.data.mean), tuple(cfg.data.std)))
    assert len(batches) == len(dataset)
    assert batches[1] is None
    assert all(b is not None and b[0].dtype == torch.float32 for i, b in enumerate(batches) if i != 1)

