"""Run manifest: the data fingerprint, run.json / classes.json, and how a checkpoint differs from this run."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import timm
import torch

from conftest import CLASSES, TINY_MODEL, write_image_folder
from tunecv import __version__
from tunecv.config import load_config
from tunecv.data import create_dataset
from tunecv.data.datasets import ImageDataset
from tunecv.report.manifest import class_changes, data_fingerprint, git_commit, run_differences, write_run_manifest

ROOT = Path(__file__).resolve().parents[2]


def _fingerprint(data_dir: Path, splits: tuple[str, ...] = ("train", "val")) -> str:
    cfg = load_config(None, {"dataset": "folder", "data_dir": str(data_dir), "model": TINY_MODEL, "image_resize": 32})
    return data_fingerprint([create_dataset(cfg.data, split, None) for split in splits])


def test_fingerprint_is_short_hex_and_stable_across_builds(tiny_image_folder):
    first = _fingerprint(tiny_image_folder)
    assert re.fullmatch(r"[0-9a-f]{16}", first)
    assert _fingerprint(tiny_image_folder) == first


def test_fingerprint_of_a_copied_folder_matches(tiny_image_folder, tmp_path):
    copy = shutil.copytree(tiny_image_folder, tmp_path / "elsewhere" / "copy")
    assert _fingerprint(copy) == _fingerprint(tiny_image_folder)


def test_fingerprint_covers_splits_and_skips_none(tiny_image_folder):
    cfg = load_config(None, {"dataset": "folder", "data_dir": str(tiny_image_folder), "model": TINY_MODEL,
                             "image_resize": 32})
    train = create_dataset(cfg.data, "train", None)
    assert data_fingerprint([train, None]) == data_fingerprint([train])
    assert _fingerprint(tiny_image_folder) != _fingerprint(tiny_image_folder, ("train",))


@pytest.mark.parametrize("change", ["add", "remove", "resize", "rename_class", "move_to_other_class"])
def test_fingerprint_changes_with_the_data(tmp_path, change):
    data = write_image_folder(tmp_path / "images")
    before = _fingerprint(data)
    image = data / "train" / "circle" / "circle_00.png"
    if change == "add":
        shutil.copy(image, image.with_name("circle_99.png"))
    elif change == "remove":
        image.unlink()
    elif change == "resize":  # same name, other content size: os.stat sees it without reading the file
        image.write_bytes(image.read_bytes() + b"\0")
    elif change == "rename_class":
        for split in ("train", "val"):
            (data / split / "circle").rename(data / split / "disc")
    else:
        image.rename(data / "train" / "square" / image.name)
    assert _fingerprint(data) != before


def _arrays_dataset(pixels: np.ndarray, labels: list[int]) -> ImageDataset:
    samples = [(f"digits/train/{i:04d}", label) for i, label in enumerate(labels)]
    return ImageDataset(samples, [str(d) for d in range(10)], None, arrays=pixels)


def test_fingerprint_of_in_memory_arrays():
    pixels = np.arange(4 * 8 * 8, dtype=np.uint8).reshape(4, 8, 8)
    base = data_fingerprint([_arrays_dataset(pixels, [0, 1, 2, 3])])
    assert data_fingerprint([_arrays_dataset(pixels.copy(), [0, 1, 2, 3])]) == base
    changed = pixels.copy()
    changed[2, 3, 3] += 1
    assert data_fingerprint([_arrays_dataset(changed, [0, 1, 2, 3])]) != base
    assert data_fingerprint([_arrays_dataset(pixels, [0, 1, 2, 4])]) != base
    assert data_fingerprint([_arrays_dataset(pixels.reshape(4, 4, 16), [0, 1, 2, 3])]) != base


def test_fingerprint_does_not_fail_on_a_file_gone_since_the_scan(tiny_image_folder):
    cfg = load_config(None, {"dataset": "folder", "data_dir": str(tiny_image_folder), "model": TINY_MODEL,
                             "image_resize": 32})
    train = create_dataset(cfg.data, "train", None)
    before = data_fingerprint([train])
    Path(train.samples[0][0]).unlink()
    assert data_fingerprint([train]) != before


def test_run_manifest(tmp_path, tiny_cfg):
    argv = ["finetune.py", "--lr", "0.01", "--data_dir", "some dir"]
    path = write_run_manifest(tmp_path / "out", tiny_cfg, list(CLASSES), "0123456789abcdef", argv, world_size=2)
    assert path == tmp_path / "out" / "run.json"
    run = json.loads(path.read_text())
    assert run["tunecv"] == __version__ and run["torch"] == torch.__version__ and run["timm"] == timm.__version__
    assert run["torchvision"] and run["python"] == ".".join(map(str, sys.version_info[:3]))
    assert run["argv"] == argv and run["data_fingerprint"] == "0123456789abcdef"
    assert run["model"] == TINY_MODEL and run["num_classes"] == 3 and run["world_size"] == 2
    assert datetime.fromisoformat(run["started"]).tzinfo is not None
    assert run["git_commit"] == git_commit()
    assert json.loads((tmp_path / "out" / "classes.json").read_text()) == list(CLASSES)
    assert sorted(p.name for p in path.parent.iterdir()) == ["classes.json", "run.json"]  # no temp files


def test_git_commit_is_head_of_this_checkout():
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
    except OSError:
        pytest.skip("git is not installed")
    if head.returncode != 0:
        pytest.skip("not a git checkout")
    assert git_commit() == head.stdout.strip()


def _checkpoint(model: str = TINY_MODEL, classes: tuple[str, ...] = CLASSES, fingerprint: str | None = "aaaa") -> dict:
    data = {"model": {}, "config": {"model": model, "lr": 0.1}, "classes": list(classes)}
    return data if fingerprint is None else {**data, "data_fingerprint": fingerprint}


def test_run_differences_none_for_the_same_run():
    assert run_differences(_checkpoint(), TINY_MODEL, list(CLASSES), "aaaa") == []
    # written before fingerprints existed: not a difference
    assert run_differences(_checkpoint(fingerprint=None), TINY_MODEL, list(CLASSES), "bbbb") == []


def test_run_differences_phrases():
    checkpoint = _checkpoint(model="resnet50", classes=("cat", "circle", "square"))
    assert run_differences(checkpoint, "resnet18", ["circle", "square", "dog", "eel", "fox"], "bbbb") == [
        "model resnet18 (checkpoint: resnet50)",
        "classes differ: 3 added (e.g. dog), 1 removed (e.g. cat)",
        "data differs (fingerprint bbbb, checkpoint: aaaa)",
    ]
    assert run_differences(_checkpoint(), TINY_MODEL, list(reversed(CLASSES)), "aaaa") == [
        "classes in another order (labels would change meaning)"]


def test_class_changes():
    assert class_changes(["a", "b", "c"], ["c", "d", "a"]) == (["d"], ["b"])
    assert class_changes(["a"], ["a"]) == ([], [])
