"""Shared fixtures: a tiny real ImageFolder, a YAML writer, a tiny timm model, and logging hygiene."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from PIL import Image, ImageDraw

TINY_MODEL = "test_efficientnet"  # timm's ~100k-parameter test model (BatchNorm, classifier "classifier")
CLASSES = ("circle", "square", "stripes")
TRAIN_PER_CLASS = 8
VAL_PER_CLASS = 4


def _draw(kind: str, index: int, size: int) -> Image.Image:
    """Visually separable classes: red discs, green squares, blue/white stripes (size and offset vary)."""
    pad = 3 + index % 4
    if kind == "circle":
        image = Image.new("RGB", (size, size), (250, 235, 235))
        ImageDraw.Draw(image).ellipse([pad, pad, size - pad, size - pad], fill=(220, 20, 20))
    elif kind == "square":
        image = Image.new("RGB", (size, size), (235, 250, 235))
        ImageDraw.Draw(image).rectangle([pad, pad, size - pad, size - pad], fill=(20, 160, 20))
    else:
        image = Image.new("RGB", (size, size), (255, 255, 255))
        draw = ImageDraw.Draw(image)
        for x in range(index % 3, size, 6):
            draw.rectangle([x, 0, x + 2, size], fill=(20, 20, 200))
    return image


def write_image_folder(root: Path, train_per_class: int = TRAIN_PER_CLASS, val_per_class: int = VAL_PER_CLASS,
                       classes: tuple[str, ...] = CLASSES) -> Path:
    """root/train/<class>/*.png and root/val/<class>/*.png, 32-48 px images."""
    for split, count in (("train", train_per_class), ("val", val_per_class)):
        for kind in classes:
            folder = root / split / kind
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                size = 32 + (i * 5) % 17
                _draw(kind, i + (100 if split == "val" else 0), size).save(folder / f"{kind}_{i:02d}.png")
    return root


def write_yaml(path: Path, values: dict[str, Any]) -> Path:
    """A MindCV-style flat YAML config file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(values, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture
def tiny_image_folder(tmp_path: Path) -> Path:
    return write_image_folder(tmp_path / "images")


@pytest.fixture
def yaml_config(tmp_path: Path):
    """Call with a dict (and optionally a file name) to get the path of a written YAML config."""
    def make(values: dict[str, Any], name: str = "config.yaml") -> Path:
        return write_yaml(tmp_path / name, values)
    return make


@pytest.fixture
def tiny_model() -> str:
    return TINY_MODEL


@pytest.fixture
def tiny_overrides(tiny_image_folder: Path, tmp_path: Path) -> dict[str, Any]:
    """Config keys for a fast run on the tiny folder with the tiny model (as load_config overrides)."""
    return {"data_dir": str(tiny_image_folder), "model": TINY_MODEL, "pretrained": False, "image_resize": 32,
            "batch_size": 4, "epoch_size": 1, "num_parallel_workers": 0, "device": "cpu",
            "ckpt_save_dir": str(tmp_path / "ckpt")}


@pytest.fixture
def tiny_cfg(tiny_overrides: dict[str, Any]):
    """The tiny run's config as resolved for it (layout, the model's normalisation, classes)."""
    from tunecv.config import load_config

    return resolved(load_config(None, tiny_overrides)).cfg


ROOT = Path(__file__).resolve().parents[1]
SCRIPT_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def run_script(script: str, *args: str, check: bool = True, timeout: int = 300) -> subprocess.CompletedProcess:
    """One of the top-level scripts (finetune.py, validate.py, ...) in a subprocess, from the repo root."""
    proc = subprocess.run([sys.executable, script, *args], cwd=ROOT, env=SCRIPT_ENV, capture_output=True, text=True,
                          timeout=timeout)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="session")
def trained_checkpoint(tmp_path_factory) -> tuple[Path, Path]:
    """(image folder, <model>_best.pth) of a tiny model trained one short epoch: right on most val images, not all
    (calibration needs some errors). Shared: copy the checkpoint before changing it."""
    base = tmp_path_factory.mktemp("trained")
    data = write_image_folder(base / "images")
    run_script("finetune.py", "--data_dir", str(data), "--model", TINY_MODEL, "--pretrained", "false",
               "--image_resize", "32", "--batch_size", "4", "--epoch_size", "1", "--lr", "0.003",
               "--num_parallel_workers", "0", "--device", "cpu", "--ckpt_save_dir", str(base / "ckpt"))
    return data, base / "ckpt" / f"{TINY_MODEL}_best.pth"


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """On a shared 2-core machine, intra-op threads fight other processes (100x slower steps); one is plenty
    for these tiny models. Subprocesses get OMP_NUM_THREADS=1 from test_e2e."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _fresh_scans():
    """Each test scans its images itself (scans are remembered for the rest of the process)."""
    from tunecv.data.scan import forget_scans

    forget_scans()


@pytest.fixture(autouse=True)
def _restore_logging():
    """The entry scripts reconfigure the root logger (stderr + train.log handlers); undo that after each test,
    so no handler outlives the test's captured stderr or keeps a tmp file open."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    for handler in handlers:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(level)


def apply_freeze(model, ft) -> set[str]:
    """Freeze what the freeze keys of `ft` (a FinetuneConfig) fix for a whole run: a one-phase plan."""
    from tunecv.finetune.freezing import frozen_names
    from tunecv.finetune.phases import Phase, apply_phase
    from tunecv.models.layer_map import layer_map

    frozen = frozen_names(model, layer_map(model), ft)
    apply_phase(model, Phase(1, 1, frozenset(frozen)))
    return frozen


def prepared(cfg):
    """finetune.py's pipeline for `cfg` up to the first phase, its pieces by name (the Pipeline's fields, and task,
    run, cfg, plan, compute)."""
    from types import SimpleNamespace

    from tunecv.scripts.finetune import prepare

    task, run, pipeline, plan = prepare(cfg, new_run=False)
    return SimpleNamespace(**vars(pipeline), task=task, run=run, cfg=run.cfg, plan=plan,
                           compute=pipeline.trainer.compute)


def resolved(cfg):
    """`cfg` through the resolve step: the Run finetune.py's stages read."""
    from tunecv.resolve import resolve
    from tunecv.tasks import create_task

    return resolve(cfg, create_task(cfg), new_run=False)


def plan_for(cfg, model, steps: int, lr: float | None = None):
    """finetune.py's phase plan of a classifier `model` for `cfg` (its lr, or `lr`), `steps` optimizer steps an
    epoch; no data needed."""
    import dataclasses

    from tunecv.resolve import Run
    from tunecv.scripts.finetune import create_plan
    from tunecv.tasks.classification import Classification

    if lr is not None:
        cfg = dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, lr=lr))
    task, classes = Classification(), model.num_classes if hasattr(model, "num_classes") else 3
    run = Run(cfg, tuple(map(str, range(classes))), tuple(task.plan_phases(cfg, classes)))
    return create_plan(task, run, model, steps)


def run_config(values: dict[str, Any]):
    """A classification config from `values`, loaded and resolved by the task as a run's is (layout, the model's
    normalisation, interpolation and crop): what the data stage reads. The layout: `dataset`, else folder."""
    import dataclasses

    from tunecv.config import load_config
    from tunecv.data.datasets import resolve_layout
    from tunecv.tasks.classification import Classification

    cfg = Classification().resolve_config(load_config(None, {"dataset": "folder", **values}))
    return dataclasses.replace(cfg, data=resolve_layout(cfg.data))
