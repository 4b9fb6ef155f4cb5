"""On-disk format of the image cache: one uint8 data file (every image's pixels, back to back) and a JSON index
beside it that vouches for it: its size and CRC32, and per image [path, file size, mtime_ns, offset, height,
width, channels, decode error]. The data file is written first and the index last, both atomically, so a crash or a
damaged file is found at the next open and rebuilt, never trusted."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from tunecv.utils.fileio import atomic_target, atomic_write_text

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
_BLOCK = 16 << 20


def cache_file_for(cache_dir: Path, name: str, setting: str) -> Path:
    """One file per split and decode setting (size, mode, data root): another setting starts another file."""
    digest = hashlib.blake2b(f"v{FORMAT_VERSION}-{setting}".encode(), digest_size=6).hexdigest()
    return cache_dir / f"{name}-{digest}.u8"


def file_stat(path: str) -> list[int]:
    """[size, mtime_ns]: an image whose stat changed is decoded again."""
    try:
        stat = os.stat(path)
    except OSError:
        return [-1, -1]
    return [stat.st_size, stat.st_mtime_ns]


def index_path(cache_file: Path) -> Path:
    return cache_file.with_suffix(".json")


def read_index(cache_file: Path) -> dict | None:
    """The index of a cache file whose data is whole (size and CRC match); None when there is none or it is
    damaged (logged: it will be rebuilt)."""
    path = index_path(cache_file)
    if not path.is_file() and not cache_file.exists():
        return None
    why = ""
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(index, dict) or index.get("version") != FORMAT_VERSION:
            why = "an older format"
        elif not all(_valid_entry(e) for e in index["entries"]):
            why = "its index has malformed entries"
        elif cache_file.stat().st_size != index["nbytes"]:
            why = "its data file has the wrong size"
        elif _crc32(cache_file) != index["crc32"]:
            why = "its data file fails the checksum"
    except (OSError, ValueError, KeyError, TypeError) as err:
        why = f"unreadable ({type(err).__name__})"
    if why:
        logger.warning("image cache %s is damaged (%s); rebuilding it", cache_file, why)
        return None
    return index


def write(cache_file: Path, files: list[str], stats: list[list[int]],
          blocks: Iterable[tuple[np.ndarray, list[int], str]]) -> dict:
    """Write the data file from (flat uint8 pixels, [h, w, c], decode error) per file in order, then its index."""
    entries, offset, crc = [], 0, 0
    with atomic_target(cache_file) as tmp, open(tmp, "wb") as out:
        for path, stat, (pixels, shape, error) in zip(files, stats, blocks):
            block = pixels.tobytes()
            out.write(block)
            crc = zlib.crc32(block, crc)
            entries.append([path, *stat, offset, *shape, error])
            offset += len(block)
        out.flush()
        os.fsync(out.fileno())
    index = {"version": FORMAT_VERSION, "nbytes": offset, "crc32": crc, "entries": entries}
    atomic_write_text(index_path(cache_file), json.dumps(index))
    return index


def _valid_entry(entry) -> bool:
    return isinstance(entry, list) and len(entry) == 8 and isinstance(entry[0], str) and \
        all(isinstance(v, int) and not isinstance(v, bool) for v in entry[1:7]) and isinstance(entry[7], str)


def _crc32(path: Path) -> int:
    crc = 0
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_BLOCK), b""):
            crc = zlib.crc32(block, crc)
    return crc
