"""Start-up scan: bad files found by decoding, results cached by size + mtime (written by the run, never by the
scan), a damaged or older cache rebuilt, perceptual hashes that survive re-encoding."""

from __future__ import annotations

import io
import json
import os

import numpy as np
from PIL import Image, ImageFilter

from tunecv.data.scan import CACHE_VERSION, ScanCache, dhash, forget_scans, scan_images, write_scan_cache


def _photo(seed: int, size: tuple[int, int] = (96, 64)) -> Image.Image:
    """Smooth random texture: a photo-like image whose dHash has plenty of set and clear bits."""
    noise = np.random.default_rng(seed).integers(0, 256, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)
    return Image.fromarray(noise).resize(size, Image.Resampling.BICUBIC).filter(ImageFilter.GaussianBlur(1))


def truncated_jpeg(path, seed: int = 0) -> None:
    """A JPEG cut in half: its header is whole (it opens, it has a size), its scan data is not."""
    buffer = io.BytesIO()
    _photo(seed, (120, 90)).save(buffer, "JPEG", quality=92)
    path.write_bytes(buffer.getvalue()[:len(buffer.getvalue()) // 2])


def test_scan_reports_bad_files_and_writes_nothing(tmp_path):
    good = tmp_path / "good.png"
    Image.new("RGB", (20, 10), (1, 2, 3)).save(good)
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "text.png"
    text.write_text("not an image")
    cache = tmp_path / "cache.json"
    first = scan_images([str(good), str(empty), str(text), str(tmp_path / "missing.png")], cache)
    assert first.sizes == {str(good): (20, 10)} and first.from_cache == 0
    assert list(first.bad) == [str(empty), str(text), str(tmp_path / "missing.png")]  # in listing order
    assert first.bad[str(empty)] == "empty file" and first.bad[str(tmp_path / "missing.png")] == "file not found"
    assert not cache.exists()  # the run writes it once its start-up checks pass
    assert set(first.cache.entries) == {str(good), str(empty), str(text)} and first.cache.file == cache
    write_scan_cache([first.cache])
    forget_scans()  # the file, not this process's memory
    second = scan_images([str(good), str(empty), str(text)], cache)
    assert second.from_cache == 3 and second.sizes == first.sizes and set(second.bad) == {str(empty), str(text)}
    assert second.hashes[str(good)] == first.hashes[str(good)]
    assert second.dhashes[str(good)] == first.dhashes[str(good)]


def test_truncated_jpeg_and_png_are_found_by_decoding(tmp_path):
    jpeg, png = tmp_path / "half.jpg", tmp_path / "half.png"
    truncated_jpeg(jpeg)
    _photo(1).save(png)
    png.write_bytes(png.read_bytes()[:png.stat().st_size // 2])
    with Image.open(jpeg) as image:
        assert image.size == (120, 90)  # the header alone says nothing is wrong
    result = scan_images([str(jpeg), str(png)])
    assert set(result.bad) == {str(jpeg), str(png)} and not result.sizes
    assert "truncated" in result.bad[str(jpeg)]


def test_train_and_val_scans_share_one_cache_file(tmp_path):
    paths = []
    for i in range(4):
        paths.append(str(tmp_path / f"{i}.png"))
        _photo(i).save(paths[-1])
    cache = tmp_path / "scan_cache.json"
    train, val = scan_images(paths[:3], cache), scan_images(paths[3:], cache)
    write_scan_cache([train.cache, None, val.cache, ScanCache(None, {"ignored": []})])
    written = json.loads(cache.read_text())
    assert written["version"] == CACHE_VERSION and sorted(written["files"]) == sorted(paths)
    forget_scans()
    assert scan_images(paths, cache).from_cache == 4


def test_changed_file_is_rescanned(tmp_path):
    path = tmp_path / "img.png"
    Image.new("RGB", (20, 10)).save(path)
    cache = tmp_path / "cache.json"
    write_scan_cache([scan_images([str(path)], cache).cache])
    Image.new("RGB", (30, 12)).save(path)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    again = scan_images([str(path)], cache)
    assert again.from_cache == 0 and again.sizes[str(path)] == (30, 12)


def test_damaged_or_older_cache_is_rebuilt_not_trusted(tmp_path):
    path = tmp_path / "img.png"
    Image.new("RGB", (20, 10)).save(path)
    cache = tmp_path / "cache.json"
    cache.write_text("{not json")
    result = scan_images([str(path)], cache)
    assert result.from_cache == 0 and result.sizes[str(path)] == (20, 10)
    write_scan_cache([result.cache])
    assert json.loads(cache.read_text())["files"][str(path)][2] == [20, 10]
    forget_scans()  # what follows is about the file alone
    stat = path.stat()  # a foreign entry with the right size/mtime but a wrong shape is ignored
    cache.write_text(json.dumps({"version": CACHE_VERSION, "files": {str(path): [stat.st_size, stat.st_mtime_ns,
                                                                                  "x"]}}))
    assert scan_images([str(path)], cache).from_cache == 0
    forget_scans()
    # a version 2 cache said "readable" from the header alone: not trusted
    cache.write_text(json.dumps({"version": 2, "files": {str(path): [stat.st_size, stat.st_mtime_ns, [20, 10], "",
                                                                     "d"]}}))
    assert scan_images([str(path)], cache).from_cache == 0


def test_decompression_bomb_is_reported_not_opened(tmp_path, monkeypatch):
    path = tmp_path / "huge.png"
    Image.new("L", (64, 64)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 64 * 64 // 4)  # 64x64 is now > 2x the limit: a "bomb"
    result = scan_images([str(path)])
    assert result.bad[str(path)].startswith("decompression bomb") and not result.sizes


def _bits_apart(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def test_dhash_survives_reencoding_and_resizing_not_other_images(tmp_path):
    original = _photo(7, (160, 120))
    png, jpeg, small = tmp_path / "a.png", tmp_path / "a.jpg", tmp_path / "small.jpg"
    original.save(png)
    original.save(jpeg, quality=70)
    original.resize((80, 60), Image.Resampling.LANCZOS).save(small, quality=85)
    result = scan_images([str(png), str(jpeg), str(small)])
    hashes = [result.dhashes[str(p)] for p in (png, jpeg, small)]
    assert len(set(result.hashes.values())) == 3  # three different files ...
    assert max(_bits_apart(hashes[0], h) for h in hashes[1:]) <= 4  # ... of one picture
    others = [dhash(_photo(seed, (160, 120))) for seed in range(20, 30)]
    assert min(_bits_apart(hashes[0], h) for h in others) > 10


def test_dhash_of_16_bit_image_is_not_flat():
    gradient = np.tile(np.linspace(0, 60000, 90), (60, 1)).astype(np.uint16)  # all above 255: convert("L") clips
    image = Image.fromarray(gradient)
    assert image.mode.startswith("I;16")
    assert dhash(image) == (1 << 64) - 1  # brighter to the right everywhere


def test_a_second_scan_in_the_process_decodes_nothing_again(tmp_path):
    """The LR range test builds the data, then the run does: the images are decoded once."""
    path = tmp_path / "img.png"
    Image.new("RGB", (20, 10)).save(path)
    assert scan_images([str(path)]).from_cache == 0
    assert scan_images([str(path)]).from_cache == 1
    path.write_bytes(path.read_bytes()[:30])  # changed since: scanned again
    assert str(path) in scan_images([str(path)]).bad
