"""Data audit: train/val leaks by content, classes of identical images, extreme aspect ratios."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from PIL import Image

from tunecv.config import DataConfig
from tunecv.data.audit import audit, write_report
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
