"""Data audit: train/val leaks by content, classes of identical images, identical and near-identical images under
two labels, extreme aspect ratios."""

from __future__ import annotations

import itertools
import json
import random
import shutil
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from tunecv.config import DataConfig
from tunecv.data.audit import NEAR_BITS, PLAIN_BITS, audit, near_pairs, write_report
from tunecv.data.datasets import create_dataset


def _image(path: Path, color, size=(16, 16)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def test_audit_finds_leaks_identical_classes_and_extreme_shapes(tmp_path):
    root = tmp_path / "data"
    leaked = _image(root / "train" / "a" / "a1.png", (200, 0, 0))
    _image(root / "train" / "a" / "a2.png", (190, 10, 0))
    _image(root / "train" / "b" / "b1.png", (0, 0, 200))
    shutil.copy(root / "train" / "b" / "b1.png", root / "train" / "b" / "b2.png")  # class b: one image twice
    wide = _image(root / "train" / "a" / "strip.png", (100, 100, 100), size=(100, 10))
    copy = root / "val" / "a" / "renamed.png"
    copy.parent.mkdir(parents=True)
    shutil.copy(leaked, copy)
    _image(root / "val" / "b" / "v.png", (0, 10, 190))
    cfg = DataConfig(dataset="folder", data_dir=str(root))
    train = create_dataset(cfg, "train", None)
    val = create_dataset(cfg, "val", None, classes=train.classes)
    report = audit(train, val)
    assert report.train_val_duplicates == [(str(leaked), str(copy))]
    assert report.identical_classes == ["b"]
    assert report.extreme_aspect == [(str(wide), 100, 10)]
    assert report.class_counts == {"train": {"a": 3, "b": 2}, "val": {"a": 1, "b": 1}}
    written = json.loads(write_report(report, tmp_path / "out").read_text())
    assert written["identical_classes"] == ["b"] and len(written["train_val_duplicates"]) == 1
    assert len(report.warnings()) == 3


def test_clean_data_gives_no_warnings(tmp_path):
    for split, shade in (("train", 0), ("val", 7)):
        for name, base in (("a", (200, 0, 0)), ("b", (0, 0, 200))):
            for i in range(3):
                _image(tmp_path / split / name / f"{i}.png", tuple(c + shade + i for c in base), size=(24, 16))
    cfg = DataConfig(dataset="folder", data_dir=str(tmp_path))
    train = create_dataset(cfg, "train", None)
    report = audit(train, create_dataset(cfg, "val", None, classes=train.classes))
    assert report.warnings() == [] and report.train_val_duplicates == []


def _photo(seed: int, size=(96, 72)) -> Image.Image:
    """Smooth random texture: photo-like, so its perceptual hash has many set and clear bits."""
    noise = np.random.default_rng(seed).integers(0, 256, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)
    return Image.fromarray(noise).resize(size, Image.Resampling.BICUBIC).filter(ImageFilter.GaussianBlur(1))


def test_same_and_near_identical_images_under_two_labels(tmp_path):
    root = tmp_path / "data"
    for split in ("train", "val"):
        for name, seed in (("ants", 0), ("bees", 1)):
            for i in range(3):
                (root / split / name).mkdir(parents=True, exist_ok=True)
                _photo(seed * 10 + i + (50 if split == "val" else 0)).save(root / split / name / f"{i}.png")
    same = root / "train" / "bees" / "copy_of_ant.png"
    shutil.copy(root / "train" / "ants" / "0.png", same)
    near = root / "val" / "bees" / "ant_as_jpeg.jpg"  # another file, the same picture
    Image.open(root / "val" / "ants" / "1.png").resize((80, 60)).save(near, quality=75)
    cfg = DataConfig(dataset="folder", data_dir=str(root))
    train = create_dataset(cfg, "train", None)
    report = audit(train, create_dataset(cfg, "val", None, classes=train.classes))
    assert report.conflicting_labels == {"train": [[(str(root / "train" / "ants" / "0.png"), "ants"),
                                                    (str(same), "bees")]], "val": []}
    assert report.near_duplicate_labels["train"] == []  # the identical pair is reported once, above
    (path, name, other, other_name, bits), = report.near_duplicate_labels["val"]
    assert {(path, name), (other, other_name)} == {(str(root / "val" / "ants" / "1.png"), "ants"),
                                                   (str(near), "bees")} and bits <= NEAR_BITS
    lines = report.warnings()
    assert f"2 images appear under two labels (same content), e.g. {root / 'train' / 'ants' / '0.png'} (ants) = " \
           f"{same} (bees): fix their labels or remove one" in lines
    assert any(line.startswith("1 pair of near-identical images has different labels") for line in lines)
    written = json.loads(write_report(report, tmp_path / "out").read_text())
    assert len(written["conflicting_labels"]["train"]) == 1 and len(written["near_duplicate_labels"]["val"]) == 1


def test_near_pairs_finds_every_close_pair_with_different_labels():
    rng = random.Random(0)
    hashes = [rng.getrandbits(64) for _ in range(800)]
    for _ in range(300):  # near copies, 0 to 6 bits apart
        value = hashes[rng.randrange(800)]
        for _ in range(rng.randrange(7)):
            value ^= 1 << rng.randrange(64)
        hashes[rng.randrange(800)] = value
    hashes[:2] = [0, 1]  # flat images: too plain to compare
    labels = [rng.randrange(3) for _ in hashes]
    plain = {i for i, h in enumerate(hashes) if not PLAIN_BITS <= h.bit_count() <= 64 - PLAIN_BITS}
    brute = [(i, j, (hashes[i] ^ hashes[j]).bit_count()) for i, j in itertools.combinations(range(len(hashes)), 2)
             if labels[i] != labels[j] and (hashes[i] ^ hashes[j]).bit_count() <= NEAR_BITS
             and i not in plain and j not in plain]
    assert len(brute) > 20 and near_pairs(hashes, labels) == brute


def test_near_pairs_stays_fast_for_100k_images():
    rng = random.Random(1)
    hashes = [rng.getrandbits(64) for _ in range(100_000)]
    labels = [rng.randrange(50) for _ in hashes]
    start = time.perf_counter()
    near_pairs(hashes, labels)
    assert time.perf_counter() - start < 5.0  # ~0.3 s; all pairs would be 5e9 comparisons
