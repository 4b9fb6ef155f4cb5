"""bad_images.txt: the files a run leaves out, `path<TAB>why`, each once: those the start-up scan found, and those
that fail later (changed since the scan)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol

from tunecv.utils.fileio import atomic_write_text

logger = logging.getLogger(__name__)


class Scanned(Protocol):
    """A dataset's part in bad_images.txt (tunecv.data.datasets.ImageDataset)."""

    bad_images: list[tuple[str, str]]  # (path, why) left out at the start-up scan
    bad_images_file: Path | None  # where a file that fails later is listed


def write_bad_images(directory: Path, datasets: list[Scanned]) -> Path | None:
    """bad_images.txt: `path<TAB>why` for every image left out at the scan (nothing written when none was); the
    datasets list there, too, a file that fails later."""
    target = directory / "bad_images.txt"
    for dataset in datasets:
        dataset.bad_images_file = target
    rows = [f"{path}\t{why}" for dataset in datasets for path, why in dataset.bad_images]
    if not rows:
        return None
    atomic_write_text(target, "\n".join(rows) + "\n")
    logger.warning("%d unreadable image%s skipped; listed in %s", len(rows), "s" * (len(rows) > 1), target)
    return target


def list_bad_image(target: Path | None, path: str, why: str) -> None:
    """A file that failed after the scan joins bad_images.txt once (loader workers share the file: read it first)."""
    if target is None or f"\n{path}\t" in "\n" + (target.read_text(encoding="utf-8") if target.exists() else ""):
        return
    with open(target, "a", encoding="utf-8") as listing:
        listing.write(f"{path}\t{why}\n")
