"""Decoded-image cache: cached evaluation pixels identical to uncached ones (RAM and disk), random training crops
still random, disk caches reused per file and rebuilt when changed or damaged, atomic writes, workers, storage."""

from __future__ import annotations

import copy
import json
import logging
import os
import pickle
from multiprocessing.reduction import ForkingPickler
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from torch.utils.data import DataLoader

from conftest import CLASSES, TINY_MODEL, TRAIN_PER_CLASS, run_config
from tunecv.config import DataConfig
from tunecv.data import cache_file, image_cache
from tunecv.data.datasets import create_dataset
from tunecv.data.image_cache import ImageCache, Resize, attach_image_cache, choose_storage, plan_resize
from tunecv.data.transforms import create_transforms, draft_size
from tunecv.errors import CacheChanged, UserError

LOGGER = "tunecv.data.image_cache"
TRAIN_IMAGES = len(CLASSES) * TRAIN_PER_CLASS
NON_SQUARE = {"wide.png": (61, 37), "tall.png": (33, 50), "small.png": (20, 25), "big.png": (90, 70)}


def _cfg(data_dir: Path, **overrides):
    """Resolved as a run resolves it (layout, the model's normalisation)."""
    return run_config({"data_dir": str(data_dir), "model": TINY_MODEL, "image_resize": 32, **overrides})


def _pattern(size: tuple[int, int], seed: int, mode: str = "RGB") -> Image.Image:
    """Noisy pixels: any resampling difference shows up."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    ImageDraw.Draw(image).ellipse([2, 2, size[0] // 2, size[1] // 2], fill=(200, 30, 30))
    return image.convert(mode)


@pytest.fixture
def folder(tiny_image_folder: Path) -> Path:
    """The tiny folder plus non-square, smaller-than-crop and larger images in train/circle."""
    for i, (name, size) in enumerate(NON_SQUARE.items()):
        _pattern(size, i).save(tiny_image_folder / "train" / "circle" / name)
    return tiny_image_folder


def _pair(cfg, split: str, transform, mode: str = "RGB"):
    """Two datasets of the same files: one gets the cache, the other decodes every time."""
    return (create_dataset(cfg.data, split, transform, image_mode=mode),
            create_dataset(cfg.data, split, transform, image_mode=mode))


def _attach(dataset, transform, storage: str, cache_dir: Path, cfg, training: bool, name: str = "train") -> str:
    return attach_image_cache(dataset, transform, storage, cache_dir, name, draft_size(cfg.data, training), None)


def _cache_files(cache_dir: Path) -> list[Path]:
    return sorted(cache_dir.glob("*.u8"))


def _resized(path: str, resize: Resize, mode: str = "RGB") -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(resize(image.convert(mode)))


@pytest.mark.parametrize("storage", ["ram", "disk"])
def test_eval_transform_cached_is_pixel_identical(folder, tmp_path, storage):
    cfg = _cfg(folder)
    transform = create_transforms(cfg.data, is_training=False)
    resize = plan_resize(transform, draft_size(cfg.data, False))
    assert resize.exact  # the eval transform's own Resize is done once, at caching
    cached, plain = _pair(cfg, "train", transform)
    assert _attach(cached, transform, storage, tmp_path / "cache", cfg, training=False) == storage
    cache = cached.image_cache
    assert isinstance(cache, ImageCache) and cache.storage == storage and not cache.errors
    assert len(cached) == TRAIN_IMAGES + len(NON_SQUARE)
    assert bool(_cache_files(tmp_path / "cache")) == (storage == "disk")
    for index in range(len(cached)):
        image, label, i = cached[index]
        expected, expected_label, _ = plain[index]
        assert (label, i) == (expected_label, index)
        assert image.shape == (3, 32, 32) and torch.equal(image, expected), cached.samples[index][0]
        # what is stored is the resized image, not the original
        height, width, channels = cache.shapes[index]
        assert min(height, width) == resize.short_side and channels == 3
        assert np.array_equal(cache.pixels(index), _resized(cached.samples[index][0], resize))


@pytest.mark.parametrize("storage", ["ram", "disk"])
def test_training_transform_on_cached_pixels_stays_random(folder, tmp_path, storage):
    cfg = _cfg(folder, scale=[0.2, 1.0])
    transform = create_transforms(cfg.data, is_training=True)
    short_side = draft_size(cfg.data, True)
    resize = plan_resize(transform, short_side)
    assert not resize.exact and resize.short_side == short_side
    cached, plain = _pair(cfg, "train", transform)
    _attach(cached, transform, storage, tmp_path / "cache", cfg, training=True)
    cache = cached.image_cache
    for index, (path, _) in enumerate(cached.samples):
        with Image.open(path) as image:
            width, height = image.size
        stored = tuple(cache.shapes[index][:2])
        if min(width, height) <= short_side:  # never upscaled
            assert stored == (height, width)
        else:
            assert min(stored) == short_side and stored == resize.shape(width, height)
    torch.manual_seed(0)
    for index in range(0, len(cached), 5):
        first, second = cached[index][0], cached[index][0]
        assert first.shape == plain[index][0].shape == (3, 32, 32)
        assert not torch.equal(first, second)  # RandomResizedCrop (and jitter) draw again per call


def _touch_later(path: Path, seconds: int = 10) -> None:
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + seconds * 10**9))


def _decoded_line(caplog) -> str:
    lines = [r.getMessage() for r in caplog.records if "images decoded" in r.getMessage()]
    assert len(lines) == 1, [r.getMessage() for r in caplog.records]
    return lines[0]


def _eval_set(cfg):
    transform = create_transforms(cfg.data, is_training=False)
    return create_dataset(cfg.data, "train", transform), transform


def test_disk_cache_reused_and_changed_file_decoded_again(tiny_image_folder, tmp_path, caplog):
    cfg, cache_dir = _cfg(tiny_image_folder), tmp_path / "cache"
    dataset, transform = _eval_set(cfg)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        _attach(dataset, transform, "disk", cache_dir, cfg, training=False)
    assert _decoded_line(caplog).startswith(f"image cache: {TRAIN_IMAGES} of {TRAIN_IMAGES} images decoded, 0 reused")
    [data_file] = _cache_files(cache_dir)
    index_file = data_file.with_suffix(".json")
    first_bytes, first_index = data_file.read_bytes(), index_file.read_bytes()
    first_pixels = [np.array(dataset.image_cache.pixels(i)) for i in range(len(dataset))]

    # a second run with nothing changed: the cache is used as it is (nothing decoded, nothing written)
    caplog.clear()
    again, _ = _eval_set(cfg)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        _attach(again, transform, "disk", cache_dir, cfg, training=False)
    assert not [r for r in caplog.records if "images decoded" in r.getMessage() or r.levelno >= logging.WARNING]
    assert again.image_cache.path == data_file
    assert data_file.read_bytes() == first_bytes and index_file.read_bytes() == first_index

    # one file rewritten with other pixels (same name, later mtime): only it is decoded again
    changed_index = 5
    changed = Path(dataset.samples[changed_index][0])
    _pattern((40, 40), 99).save(changed)
    _touch_later(changed)
    caplog.clear()
    rebuilt, _ = _eval_set(cfg)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        _attach(rebuilt, transform, "disk", cache_dir, cfg, training=False)
    assert _decoded_line(caplog).startswith(f"image cache: 1 of {TRAIN_IMAGES} images decoded, "
                                            f"{TRAIN_IMAGES - 1} reused")
    assert _cache_files(cache_dir) == [data_file] and not list(cache_dir.glob("*.tmp")) \
        and not list(cache_dir.glob(".*.tmp"))
    plain, _ = _eval_set(cfg)
    resize = plan_resize(transform, draft_size(cfg.data, False))
    for index in range(len(rebuilt)):
        assert torch.equal(rebuilt[index][0], plain[index][0]), index
        expected = _resized(rebuilt.samples[index][0], resize)
        assert np.array_equal(rebuilt.image_cache.pixels(index), expected)
        if index != changed_index:  # the others: the very pixels of the first build
            assert np.array_equal(rebuilt.image_cache.pixels(index), first_pixels[index])
    assert not np.array_equal(rebuilt.image_cache.pixels(changed_index), first_pixels[changed_index])


def _flip_bytes(path: Path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 16] = bytes(255 - b for b in data[middle:middle + 16])
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-100])


def _garbage_index(path: Path) -> None:
    path.with_suffix(".json").write_text("{not json at all", encoding="utf-8")


def _list_index(path: Path) -> None:
    path.with_suffix(".json").write_text("[1, 2, 3]", encoding="utf-8")


def _other_version(path: Path) -> None:
    index_path = path.with_suffix(".json")
    index = json.loads(index_path.read_text(encoding="utf-8"))
    index["version"] = cache_file.FORMAT_VERSION + 1
    index_path.write_text(json.dumps(index), encoding="utf-8")


def _index_without_checksum(path: Path) -> None:
    index_path = path.with_suffix(".json")
    index = json.loads(index_path.read_text(encoding="utf-8"))
    del index["crc32"]
    index_path.write_text(json.dumps(index), encoding="utf-8")


def _garbage_entries(path: Path) -> None:
    """Whole JSON with the right version, size and checksum, but entries that are not entries."""
    index_path = path.with_suffix(".json")
    index = json.loads(index_path.read_text(encoding="utf-8"))
    index["entries"] = [["?"]] * len(index["entries"])
    index_path.write_text(json.dumps(index), encoding="utf-8")


def _no_index(path: Path) -> None:
    path.with_suffix(".json").unlink()


def _no_data(path: Path) -> None:
    path.unlink()


@pytest.mark.parametrize("damage, why", [
    (_flip_bytes, "fails the checksum"), (_truncate, "wrong size"), (_garbage_index, "unreadable"),
    (_list_index, "older format"), (_other_version, "older format"), (_index_without_checksum, "unreadable"),
    (_no_index, "unreadable"), (_no_data, "unreadable"), (_garbage_entries, ""),
])
def test_damaged_disk_cache_is_rebuilt_not_trusted(tiny_image_folder, tmp_path, caplog, damage, why):
    cfg, cache_dir = _cfg(tiny_image_folder), tmp_path / "cache"
    dataset, transform = _eval_set(cfg)
    _attach(dataset, transform, "disk", cache_dir, cfg, training=False)
    [data_file] = _cache_files(cache_dir)
    good = data_file.read_bytes()
    damage(data_file)
    caplog.clear()
    rebuilt, _ = _eval_set(cfg)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        _attach(rebuilt, transform, "disk", cache_dir, cfg, training=False)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "is damaged" in warnings[0] and why in warnings[0] and "rebuilding" in warnings[0]
    assert _decoded_line(caplog).startswith(f"image cache: {TRAIN_IMAGES} of {TRAIN_IMAGES} images decoded")
    assert data_file.read_bytes() == good
    plain, _ = _eval_set(cfg)
    for index in range(len(rebuilt)):
        assert torch.equal(rebuilt[index][0], plain[index][0]), index
    # and the rebuilt cache is whole again: the next run trusts it without a warning
    caplog.clear()
    third, _ = _eval_set(cfg)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        _attach(third, transform, "disk", cache_dir, cfg, training=False)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING or "images decoded" in r.getMessage()]


def _temp_files(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if p.name.endswith(".tmp")]


def test_disk_cache_written_atomically(tiny_image_folder, tmp_path):
    cfg, cache_dir = _cfg(tiny_image_folder), tmp_path / "cache"
    dataset, transform = _eval_set(cfg)
    _attach(dataset, transform, "disk", cache_dir, cfg, training=False)
    [data_file] = _cache_files(cache_dir)
    index_file = data_file.with_suffix(".json")
    assert sorted(p.name for p in cache_dir.iterdir()) == sorted([data_file.name, index_file.name])
    good_data, good_index = data_file.read_bytes(), index_file.read_bytes()

    # every file changed, so a new build decodes all of them; the third decode fails with a non-image error
    for path, _ in dataset.samples:
        _touch_later(Path(path))
    fresh, _ = _eval_set(cfg)
    files = [path for path, _ in fresh.samples]
    calls = []

    def failing_load(index: int) -> Image.Image:
        calls.append(index)
        if index == 2:
            raise RuntimeError("decoder crashed")
        return fresh.load_image(index)

    resize = plan_resize(transform, draft_size(cfg.data, False))
    with pytest.raises(RuntimeError, match="decoder crashed"):
        image_cache.build(failing_load, files, resize, "RGB", "disk", data_file, workers=1)
    assert 2 in calls
    assert data_file.read_bytes() == good_data and index_file.read_bytes() == good_index
    assert not _temp_files(cache_dir)
    assert sorted(p.name for p in cache_dir.iterdir()) == sorted([data_file.name, index_file.name])


def test_unreadable_image_recorded_in_the_cache(tiny_image_folder, tmp_path):
    """A file that fails to decode at caching is an error entry: reading it raises like the uncached path."""
    cfg, cache_dir = _cfg(tiny_image_folder, on_bad_image="skip"), tmp_path / "cache"
    dataset, transform = _eval_set(cfg)
    broken = Path(dataset.samples[3][0])
    broken.write_bytes(broken.read_bytes()[:40])  # after the scan: a truncated PNG
    for storage in ("ram", "disk"):
        cached = copy.copy(dataset)
        _attach(cached, transform, storage, cache_dir, cfg, training=False)
        assert set(cached.image_cache.errors) == {3}
        assert cached[3] is None  # skipped like an uncached unreadable file
        assert cached[4][0].shape == (3, 32, 32)


@pytest.mark.parametrize("storage", ["ram", "disk"])
def test_cached_dataset_in_worker_processes(folder, tmp_path, storage):
    cfg = _cfg(folder)
    transform = create_transforms(cfg.data, is_training=False)
    cached, plain = _pair(cfg, "train", transform)
    _attach(cached, transform, storage, tmp_path / "cache", cfg, training=False)
    cache = cached.image_cache
    cache.pixels(0)  # map it in this process first: what travels must still not be the pixels
    # what a worker receives: the shared-memory handle (RAM) or the path (disk), never the pixel bytes
    sent = ForkingPickler.dumps(cache)
    assert len(sent) < cache.nbytes / 10
    received = pickle.loads(sent)
    for index in range(len(cached)):
        assert np.array_equal(received.pixels(index), cache.pixels(index))
    if storage == "ram":
        assert cache._shared.is_shared()

    def batches(workers: int, context=None) -> list:
        loader = DataLoader(cached, batch_size=4, num_workers=workers, multiprocessing_context=context)
        return list(loader)

    single = batches(0)
    assert len(single) == -(-len(cached) // 4)
    for context in ([None, "spawn"] if storage == "ram" else [None]):  # fork (Linux default) and a real pickle
        multi = batches(2, context)
        assert len(multi) == len(single)
        for (images, labels, indices), (images0, labels0, indices0) in zip(multi, single):
            assert torch.equal(indices, indices0) and torch.equal(labels, labels0) and torch.equal(images, images0)
    plain_batches = list(DataLoader(plain, batch_size=4))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(single, plain_batches))


@pytest.mark.parametrize("storage", ["ram", "disk"])
def test_grayscale_round_trip(tiny_image_folder, tmp_path, storage):
    for i, size in enumerate([(45, 31), (28, 40)]):
        _pattern(size, 10 + i, mode="L").save(tiny_image_folder / "train" / "square" / f"gray_{i}.png")
    cfg = _cfg(tiny_image_folder, in_channels=1)
    transform = create_transforms(cfg.data, is_training=False)
    cached, plain = _pair(cfg, "train", transform, mode="L")
    _attach(cached, transform, storage, tmp_path / "cache", cfg, training=False)
    cache = cached.image_cache
    assert cache.mode == "L" and set(cache.shapes[:, 2].tolist()) == {1}
    resize = plan_resize(transform, draft_size(cfg.data, False))
    for index, (path, _) in enumerate(cached.samples):
        image = cache.image(index)
        assert image.mode == "L"
        assert np.array_equal(np.asarray(image), _resized(path, resize, mode="L"))
        assert torch.equal(cached[index][0], plain[index][0])
    if storage == "disk":  # 1 byte per pixel on disk
        assert _cache_files(tmp_path / "cache")[0].stat().st_size == cache.nbytes == int(
            sum(h * w for h, w, _ in cache.shapes))


def test_choose_storage(tmp_path):
    assert choose_storage("auto", 1000, tmp_path, ram_budget=10_000) == "ram"
    assert choose_storage("auto", 1000, tmp_path, ram_budget=10) == "disk"
    assert choose_storage("auto", 10**18, tmp_path / "not" / "yet", ram_budget=10) == "none"  # > half the disk
    for requested in ("ram", "disk", "none"):
        assert choose_storage(requested, 10**18, tmp_path, ram_budget=0) == requested


def test_auto_with_a_tiny_ram_budget_caches_on_disk(tiny_image_folder, tmp_path):
    cfg, cache_dir = _cfg(tiny_image_folder), tmp_path / "cache"
    dataset, transform = _eval_set(cfg)
    storage = attach_image_cache(dataset, transform, "auto", cache_dir, "train", draft_size(cfg.data, False), 1e-9)
    assert storage == "disk" and dataset.image_cache.storage == "disk"
    [data_file] = _cache_files(cache_dir)
    assert data_file.name.startswith("train-") and data_file.with_suffix(".json").is_file()
    dataset_ram, _ = _eval_set(cfg)
    assert attach_image_cache(dataset_ram, transform, "auto", tmp_path / "other", "train", 40, 1.0) == "ram"
    assert dataset_ram.image_cache.storage == "ram" and not (tmp_path / "other").exists()


def test_none_attaches_nothing(tiny_image_folder, tmp_path):
    cfg, cache_dir = _cfg(tiny_image_folder), tmp_path / "cache"
    dataset, transform = _eval_set(cfg)
    assert attach_image_cache(dataset, transform, "none", cache_dir, "train", 40, None) == "none"
    assert dataset.image_cache is None and not cache_dir.exists()


@pytest.mark.parametrize("requested", ["auto", "ram", "disk"])
def test_in_memory_datasets_are_not_cached(tmp_path, requested):
    cfg = DataConfig(dataset="digits")
    transform = create_transforms(_cfg(tmp_path).data, is_training=False)
    dataset = create_dataset(cfg, "train", transform)
    assert dataset.arrays is not None
    before = dataset[0][0]
    assert attach_image_cache(dataset, transform, requested, tmp_path / "cache", "train", 40, None) == "none"
    assert dataset.image_cache is None and not (tmp_path / "cache").exists()
    assert torch.equal(dataset[0][0], before)


def test_a_disk_cache_rewritten_under_the_run_is_an_error_not_a_skipped_image(tiny_image_folder, tmp_path):
    cfg = _cfg(tiny_image_folder)
    transform = create_transforms(cfg.data, is_training=False)
    dataset = create_dataset(cfg.data, "val", transform)
    dataset.skip_unreadable = True  # on_bad_image: skip must not hide it
    _attach(dataset, transform, "disk", tmp_path / "cache", cfg, training=False, name="val")
    data_file = dataset.image_cache.path
    data_file.write_bytes(data_file.read_bytes())  # another run rewrote it: new mtime
    os.utime(data_file, ns=(data_file.stat().st_atime_ns, data_file.stat().st_mtime_ns + 10**9))
    with pytest.raises(CacheChanged, match="rewritten by another run"):
        dataset[0]


def test_an_unwritable_cache_dir(tiny_image_folder, tmp_path, caplog):
    cfg = _cfg(tiny_image_folder)
    transform = create_transforms(cfg.data, is_training=False)
    dataset = create_dataset(cfg.data, "val", transform)
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    with pytest.raises(UserError, match="cannot write the image cache in .*; set cache_dir"):
        _attach(dataset, transform, "disk", blocked / "cache", cfg, training=False, name="val")
    tiny_budget = attach_image_cache(dataset, transform, "auto", blocked / "cache", "val",
                                     draft_size(cfg.data, False), 1e-9)
    assert tiny_budget == "none" and dataset.image_cache is None
    assert "image cache: off" in caplog.text
