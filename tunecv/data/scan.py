"""Start-up scan of the image files: header read (no decode) and content digest, cached by file size + mtime.

Finds empty, missing, non-image and decompression-bomb files before training, and the sizes and digests the
data audit needs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from tunecv.utils.fileio import atomic_write_text

logger = logging.getLogger(__name__)

CACHE_VERSION = 2


@dataclass
class ScanResult:
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)  # readable path → (width, height)
    hashes: dict[str, str] = field(default_factory=dict)  # readable path → content digest (for the audit)
    bad: dict[str, str] = field(default_factory=dict)  # unreadable path → why
    seconds: float = 0.0
    from_cache: int = 0


def header(path: str) -> tuple[tuple[int, int] | None, str]:
    """((width, height), "") for a readable image header, else (None, reason)."""
    try:
        if os.path.getsize(path) == 0:
            return None, "empty file"
        with Image.open(path) as image:
            return image.size, ""
    except FileNotFoundError:
        return None, "file not found"
    except Image.DecompressionBombError as err:
        return None, f"decompression bomb ({err})"
    except (OSError, UnidentifiedImageError, ValueError) as err:
        return None, str(err) or type(err).__name__


def content_digest(path: str) -> str:
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def scan_images(paths: list[str], cache_file: Path | None = None) -> ScanResult:
    """Header-check and digest every path; entries of `cache_file` whose size and mtime still match are reused."""
    start = time.perf_counter()
    cache = _read_cache(cache_file)
    result = ScanResult()
    fresh: dict[str, list] = {}
    for path in paths:
        try:
            stat = os.stat(path)
            key = [stat.st_size, stat.st_mtime_ns]
        except OSError:
            result.bad[path] = "file not found"
            continue
        entry = cache.get(path)
        if entry is not None and entry[:2] == key:
            result.from_cache += 1
            size, reason, digest = (tuple(entry[2]) if entry[2] else None), entry[3], entry[4]
        else:
            size, reason = header(path)
            digest = content_digest(path) if size is not None else ""
        fresh[path] = key + [list(size) if size else None, reason, digest]
        if size is None:
            result.bad[path] = reason
        else:
            result.sizes[path] = size
            result.hashes[path] = digest
    if cache_file is not None:
        cache.update(fresh)
        atomic_write_text(cache_file, json.dumps({"version": CACHE_VERSION, "files": cache}))
    result.seconds = time.perf_counter() - start
    return result


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
    return {k: v for k, v in files.items() if isinstance(v, list) and len(v) == 5}
