"""Start-up scan of the image files: a cheap decode (JPEGs at 1/8 scale), a content digest and a perceptual hash,
cached by file size + mtime.

Finds empty, missing, truncated, corrupt and decompression-bomb files before training, and the sizes and hashes
the data audit needs. It writes nothing: the run writes the cache it returns (`write_scan_cache`) once every
start-up check has passed, so a run that fails at start leaves its folder as it was.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile

from tunecv.utils import distributed
from tunecv.utils.fileio import atomic_write_text
from tunecv.utils.runtime import cores_per_process

logger = logging.getLogger(__name__)

CACHE_VERSION = 3  # 3: entries decoded, not header-read, and with a perceptual hash
# JPEGs decode at the smallest 1/2, 1/4 or 1/8 scale still covering 64 px: less IDCT and colour work (the scan of
# hymenoptera_data's photos takes 2/3 of a full decode); the entropy decoding, which finds truncation, is whole
DRAFT_PX = 64
HASH_SIDE = 8  # dHash: 9x8 grayscale pixels, one bit per horizontal neighbour pair = 64 bits
# this process's scans: a second build of the same data (the LR range test's, then the run's) decodes nothing again
_SCANNED: dict[str, list] = {}


@dataclass
class ScanCache:
    """What scan_cache.json should hold after a scan (only the scanned paths), and where it goes (None: nowhere)."""
    file: Path | None
    entries: dict[str, list] = field(default_factory=dict)  # path → [size, mtime_ns, [w, h] | None, why, digest,
    #                                                            dhash as 16 hex digits]


@dataclass
class ScanResult:
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)  # readable path → (width, height)
    hashes: dict[str, str] = field(default_factory=dict)  # readable path → content digest (for the audit)
    dhashes: dict[str, int] = field(default_factory=dict)  # readable path → 64-bit perceptual hash (the audit's)
    bad: dict[str, str] = field(default_factory=dict)  # unreadable path → why
    seconds: float = 0.0
    from_cache: int = 0
    cache: ScanCache = field(default_factory=lambda: ScanCache(None))


def dhash(image: Image.Image) -> int:
    """Difference hash: each bit says whether a pixel of the 9x8 grayscale thumbnail is brighter than its left
    neighbour, so it survives re-encoding, resizing and small edits (Krawetz, "Kind of like that", 2013)."""
    if image.mode not in ("L", "I", "F") and not image.mode.startswith("I;"):
        image = image.convert("L")  # 16-bit and float stay as they are: comparisons need no 8-bit scaling
    elif image.mode.startswith("I;"):
        image = image.convert("I")
    pixels = np.asarray(image.resize((HASH_SIDE + 1, HASH_SIDE), Image.Resampling.BOX), dtype=np.float64)
    bits = (pixels[:, 1:] > pixels[:, :-1]).ravel()
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def inspect(path: str) -> tuple[tuple[int, int] | None, str, int]:
    """((width, height), "", dhash) for an image that decodes to its end, else (None, reason, 0)."""
    try:
        if os.path.getsize(path) == 0:
            return None, "empty file", 0
        with Image.open(path) as image:
            size = image.size
            image.draft("RGB", (DRAFT_PX, DRAFT_PX))  # JPEG only; the whole file is still read and checked
            image.load()
            return size, "", dhash(image)
    except FileNotFoundError:
        return None, "file not found", 0
    except Image.DecompressionBombError as err:
        return None, f"decompression bomb ({err})", 0
    except Exception as err:  # PIL's decoders also raise struct.error, IndexError, ... on corrupt data
        return None, str(err) or type(err).__name__, 0


def content_digest(path: str) -> str:
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def scan_entry(path: str, key: list[int]) -> list:
    """The cache entry of one file: [size, mtime_ns, [w, h] | None, why, digest, dhash hex]."""
    size, reason, perceptual = inspect(path)
    digest = content_digest(path) if size is not None else ""
    return key + [list(size) if size else None, reason, digest, f"{perceptual:016x}"]


def scan_images(paths: list[str], cache_file: Path | None = None) -> ScanResult:
    """Decode-check, digest and hash every path; entries of `cache_file` whose size and mtime still match are
    reused. Writes nothing: `result.cache` is what the cache file should hold (see `write_scan_cache`)."""
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise RuntimeError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is on, so the scan cannot find truncated images")
    start = time.perf_counter()
    cached = {**_SCANNED, **_read_cache(cache_file)}
    result = ScanResult()
    entries: dict[str, list] = {}
    stale: dict[str, list[int]] = {}
    for path in paths:
        try:
            stat = os.stat(path)
        except OSError:
            continue  # listed as not found below
        key = [stat.st_size, stat.st_mtime_ns]
        if path in cached and cached[path][:2] == key:
            entries[path] = cached[path]
        else:
            stale[path] = key
    result.from_cache = len(entries)
    # PIL and hashlib release the GIL while decoding and hashing, so threads use every core (this process's share);
    # in a distributed run one process decodes and the others take its verdicts, rather than all on the same CPUs
    fresh = None
    if distributed.is_main():
        with ThreadPoolExecutor(max_workers=cores_per_process()) as pool:
            fresh = dict(zip(stale, pool.map(scan_entry, stale, stale.values())))
    entries.update(distributed.broadcast(fresh))
    _SCANNED.update(entries)
    for path in paths:
        _add(result, path, entries.get(path, [-1, -1, None, "file not found", "", "0"]))
    result.cache = ScanCache(cache_file, entries)
    result.seconds = time.perf_counter() - start
    return result


def forget_scans() -> None:
    """Scan every file again from now on, unless a cache file has it (a benchmark's cold scan, a test's)."""
    _SCANNED.clear()


def write_scan_cache(caches: list[ScanCache | None]) -> None:
    """Write each cache file once, with the entries of every scan made with it (train and val share one)."""
    merged: dict[Path, dict[str, list]] = {}
    for cache in caches:
        if cache is not None and cache.file is not None:
            merged.setdefault(cache.file, {}).update(cache.entries)
    for file, entries in merged.items():
        atomic_write_text(file, json.dumps({"version": CACHE_VERSION, "files": entries}))


def _add(result: ScanResult, path: str, entry: list) -> None:
    size, reason, digest, perceptual = entry[2:]
    if size is None:
        result.bad[path] = reason
    else:
        result.sizes[path] = (size[0], size[1])
        result.hashes[path] = digest
        result.dhashes[path] = int(perceptual, 16)


def _read_cache(cache_file: Path | None) -> dict[str, list]:
    """A damaged or foreign cache is ignored (rebuilt), never trusted."""
    if cache_file is None or not cache_file.is_file():
        return {}
    try:
        data = json.loads(cache_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        logger.warning("scan cache %s is damaged; rebuilding it", cache_file)
        return {}
    files = data.get("files") if isinstance(data, dict) and data.get("version") == CACHE_VERSION else None
    if not isinstance(files, dict):
        return {}
    return {k: v for k, v in files.items() if _valid_entry(v)}


def _valid_entry(entry: object) -> bool:
    if not isinstance(entry, list) or len(entry) != 6 or not isinstance(entry[5], str):
        return False
    size = entry[2]
    return (size is None or (isinstance(size, list) and len(size) == 2)) and _is_hex(entry[5])


def _is_hex(text: str) -> bool:
    try:
        int(text, 16)
    except ValueError:
        return False
    return True
