"""What a run was: a data fingerprint, run.json (versions, commit, command line) and classes.json, and how a
checkpoint differs from this run. Reports facts; deciding whether a difference matters is the caller's job.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from tunecv import __version__
from tunecv.config import Config
from tunecv.data.datasets import ImageDataset
from tunecv.utils.fileio import atomic_write_text

FINGERPRINT_CHARS = 16
GIT_TIMEOUT_S = 2.0  # a hung git (network file system, lock) must not delay training
VERSIONED = ("torch", "torchvision", "timm")


def data_fingerprint(datasets: list[ImageDataset | None]) -> str:
    """A short hex digest of the classes, labels and files (path below their common root, size) of `datasets`
    (None entries skipped, e.g. no val set). Sizes come from os.stat, no file is read, so it is cheap; a folder
    moved or copied elsewhere keeps its fingerprint, an added, removed, resized or relabelled image changes it."""
    present = [d for d in datasets if d is not None]
    root = _common_root([path for d in present if d.arrays is None for path, _ in d.samples])
    digest = hashlib.sha256()
    for dataset in present:
        digest.update(b"dataset\0" + json.dumps(list(dataset.classes)).encode())
        if dataset.arrays is not None:
            _hash_arrays(digest, dataset)
        else:
            # sorted: the listing order of a folder is not part of the data
            for rel, label, size in sorted((_relative(p, root), label, _size(p)) for p, label in dataset.samples):
                digest.update(f"{rel}\0{label}\0{size}\n".encode())
    return digest.hexdigest()[:FINGERPRINT_CHARS]


def _hash_arrays(digest: Any, dataset: ImageDataset) -> None:
    arrays = np.ascontiguousarray(dataset.arrays)
    digest.update(f"arrays {arrays.dtype} {arrays.shape}\n".encode())
    digest.update(arrays)  # in-memory data (digits, CIFAR): at most ~150 MB, hashed in place in well under a second
    digest.update(json.dumps([label for _, label in dataset.samples]).encode())


def _common_root(paths: list[str]) -> str | None:
    if not paths:
        return None
    try:
        return os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in paths])
    except ValueError:  # paths on different drives (Windows): no common root, use them as they are
        return None


def _relative(path: str, root: str | None) -> str:
    return Path(os.path.relpath(os.path.abspath(path), root) if root else path).as_posix()


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:  # gone since the scan: still part of the listing, with no size
        return -1


def write_run_manifest(directory: str | os.PathLike, cfg: Config, classes: list[str], fingerprint: str,
                       argv: list[str], world_size: int = 1) -> Path:
    """Write `run.json` (versions, git commit, command line, data fingerprint, model, start time) and
    `classes.json` (the class names in label order) to `directory`; returns the run.json path."""
    directory = Path(directory)
    manifest = {
        "tunecv": __version__,
        **{name: _version(name) for name in VERSIONED},
        "python": sys.version.split()[0],
        "git_commit": git_commit(),
        "argv": list(argv),
        "data_fingerprint": fingerprint,
        "model": cfg.model.model,
        "num_classes": len(classes),
        "world_size": world_size,
        "started": datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds"),
    }
    path = directory / "run.json"
    atomic_write_text(path, json.dumps(manifest, indent=2) + "\n")
    atomic_write_text(directory / "classes.json", json.dumps(list(classes), indent=1, ensure_ascii=False) + "\n")
    return path


def _version(module: str) -> str | None:
    # the module's own version: unlike the package metadata it names the build (2.4.1+cu121)
    try:
        return importlib.import_module(module).__version__
    except ImportError:
        return None


def git_commit() -> str | None:
    """HEAD of the git checkout tunecv runs from; None when it is installed, or git is missing or slow."""
    package = Path(__file__).resolve().parents[1]
    # HEAD:<package>/__init__.py must exist too: a venv inside some other repository is not our checkout
    command = ["git", "rev-parse", "HEAD", f"HEAD:./{package.name}/__init__.py"]
    try:
        proc = subprocess.run(command, cwd=package.parent, capture_output=True, text=True, timeout=GIT_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = proc.stdout.split()
    return lines[0] if proc.returncode == 0 and lines else None


def class_changes(before: list[str], after: list[str]) -> tuple[list[str], list[str]]:
    """(added, removed): the names in `after` but not `before`, and the reverse, each in its list's order."""
    old, new = set(before), set(after)
    return [c for c in after if c not in old], [c for c in before if c not in new]


def run_differences(checkpoint: dict[str, Any], model_name: str, classes: list[str], fingerprint: str) -> list[str]:
    """How this run (model, classes, data fingerprint) differs from `checkpoint` (a dict from
    `tunecv.train.checkpoint.load_checkpoint`), one short phrase each; empty when it is the same run.
    A checkpoint without a fingerprint (written before they existed) is not a difference."""
    differences = []
    saved_model = checkpoint["config"].get("model")
    if saved_model is not None and saved_model != model_name:
        differences.append(f"model {model_name} (checkpoint: {saved_model})")
    saved_classes = list(checkpoint["classes"])
    added, removed = class_changes(saved_classes, classes)
    if added or removed:
        parts = [f"{len(names)} {what} (e.g. {names[0]})" for what, names in (("added", added), ("removed", removed))
                 if names]
        differences.append(f"classes differ: {', '.join(parts)}")
    elif saved_classes != list(classes):
        differences.append("classes in another order (labels would change meaning)")
    saved_fingerprint = checkpoint.get("data_fingerprint")
    if saved_fingerprint is not None and saved_fingerprint != fingerprint:
        differences.append(f"data differs (fingerprint {fingerprint}, checkpoint: {saved_fingerprint})")
    return differences
