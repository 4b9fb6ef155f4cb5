"""Start-up scan: bad files found from headers, results cached by size + mtime, a damaged cache rebuilt."""

from __future__ import annotations

import json
import os

from PIL import Image

from tunecv.data.scan import scan_images


def test_scan_reports_bad_files_and_caches(tmp_path):
    good = tmp_path / "good.png"
    Image.new("RGB", (20, 10), (1, 2, 3)).save(good)
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "text.png"
    text.write_text("not an image")
    cache = tmp_path / "cache.json"
    first = scan_images([str(good), str(empty), str(text), str(tmp_path / "missing.png")], cache)
    assert first.sizes == {str(good): (20, 10)} and first.from_cache == 0
    assert set(first.bad) == {str(empty), str(text), str(tmp_path / "missing.png")}
    assert first.bad[str(empty)] == "empty file" and first.bad[str(tmp_path / "missing.png")] == "file not found"
    second = scan_images([str(good), str(empty), str(text)], cache)
    assert second.from_cache == 3 and second.sizes == first.sizes and set(second.bad) == {str(empty), str(text)}
    assert second.hashes[str(good)] == first.hashes[str(good)]


def test_changed_file_is_rescanned(tmp_path):
    path = tmp_path / "img.png"
    Image.new("RGB", (20, 10)).save(path)
    cache = tmp_path / "cache.json"
    scan_images([str(path)], cache)
    Image.new("RGB", (30, 12)).save(path)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    again = scan_images([str(path)], cache)
    assert again.from_cache == 0 and again.sizes[str(path)] == (30, 12)


def test_damaged_cache_is_rebuilt_not_trusted(tmp_path):
    path = tmp_path / "img.png"
    Image.new("RGB", (20, 10)).save(path)
    cache = tmp_path / "cache.json"
    cache.write_text("{not json")
    result = scan_images([str(path)], cache)
    assert result.from_cache == 0 and result.sizes[str(path)] == (20, 10)
    assert json.loads(cache.read_text())["files"][str(path)][2] == [20, 10]
    stat = path.stat()  # a foreign entry with the right size/mtime but a wrong shape is ignored
    cache.write_text(json.dumps({"version": 2, "files": {str(path): [stat.st_size, stat.st_mtime_ns, "x"]}}))
    assert scan_images([str(path)], cache).from_cache == 0


def test_decompression_bomb_is_reported_not_opened(tmp_path, monkeypatch):
    path = tmp_path / "huge.png"
    Image.new("L", (64, 64)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 64 * 64 // 4)  # 64x64 is now > 2x the limit: a "bomb"
    result = scan_images([str(path)])
    assert result.bad[str(path)].startswith("decompression bomb") and not result.sizes
