"""Decoded-image cache: every image decoded and resized once, kept as uint8 pixels in RAM or in a file on disk.

Random augmentation still runs per epoch on the cached pixels; only the decode and the first resize are saved.
RAM caches live in one shared-memory tensor (DataLoader workers map it, none copies it); disk caches are one
memory-mapped file per split and size, reused by the next run for every image whose size and mtime still match.
"""

from __future__ import annotations

import collections
import logging
import os
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import functional as F

from tunecv.data import cache_file as cache_file_format
from tunecv.data.cache_file import cache_file_for
from tunecv.errors import CacheChanged, UserError
from tunecv.utils.progress import progress_bar
from tunecv.utils.runtime import cores_per_process

logger = logging.getLogger(__name__)

RAM_SHARE_OF_AVAILABLE = 0.25  # cache_images: auto keeps images in RAM up to this share of the free memory
SHARED_MEMORY = "/dev/shm"
DISK_SHARE_OF_FREE = 0.5  # ... and on disk up to this share of the free space; beyond both it caches nothing


@dataclass(frozen=True)
class Resize:
    """The resize done once at caching: shorter side to `short_side` (never enlarged), `interpolation` as the
    transform's. `exact` when it is the transform's own first step, so the cached pipeline is pixel-identical."""

    short_side: int
    interpolation: F.InterpolationMode = F.InterpolationMode.BILINEAR
    exact: bool = False

    def __call__(self, image: Image.Image) -> Image.Image:
        width, height = image.size
        if min(width, height) <= self.short_side and not self.exact:
            return image
        return F.resize(image, self.short_side, interpolation=self.interpolation, antialias=True)

    def shape(self, width: int, height: int) -> tuple[int, int]:
        """(height, width) of an image of this size after the resize."""
        short = min(width, height)
        if short <= self.short_side and not self.exact:
            return height, width
        return (self.short_side, int(self.short_side * width / height)) if height <= width else \
            (int(self.short_side * height / width), self.short_side)

    def key(self) -> str:
        return f"{self.short_side}-{self.interpolation.value}-{int(self.exact)}"


class ImageCache:
    """uint8 HxWxC pixels of every image of a dataset, by dataset index; `None` entries failed to decode."""

    def __init__(self, data: torch.Tensor | None, offsets: np.ndarray, shapes: np.ndarray, mode: str,
                 path: Path | None = None, errors: dict[int, str] | None = None) -> None:
        self._shared = data  # RAM: a shared-memory tensor (pickled to workers as a handle, never copied)
        self._pixels: np.ndarray | None = None  # its numpy view, or the memory-mapped file, made per process
        self.offsets, self.shapes, self.mode, self.path = offsets, shapes, mode, path
        self.errors = errors or {}
        self.stamp = None  # (size, mtime_ns) of a disk cache's data file when it was built or checked
        if path is not None:
            stat = path.stat()
            self.stamp = (stat.st_size, stat.st_mtime_ns)

    @property
    def nbytes(self) -> int:
        return int(self.shapes.prod(axis=1).sum())

    @property
    def storage(self) -> str:
        return "disk" if self.path is not None else "ram"

    def pixels(self, index: int) -> np.ndarray:
        if self._pixels is None:
            self._pixels = self._shared.numpy() if self._shared is not None else self._map()
        height, width, channels = self.shapes[index]
        start = int(self.offsets[index])
        flat = self._pixels[start:start + height * width * channels]
        return flat.reshape(height, width) if channels == 1 else flat.reshape(height, width, channels)

    def _map(self) -> np.ndarray:
        """The data file, memory-mapped in this process; refused if another run has rewritten it since."""
        stat = self.path.stat()
        if self.stamp is not None and (stat.st_size, stat.st_mtime_ns) != self.stamp:
            raise CacheChanged(f"image cache {self.path} was rewritten by another run; give each run its own "
                               "cache_dir")
        return np.memmap(self.path, dtype=np.uint8, mode="r")

    def image(self, index: int) -> Image.Image:
        if index in self.errors:
            raise UserError(self.errors[index])  # recorded as load_image worded it
        return Image.fromarray(self.pixels(index), self.mode)

    def __getstate__(self) -> dict:
        # a disk cache travels to worker processes as its path, never as the mapped pages
        return {**self.__dict__, "_pixels": None}


def plan_resize(transform: Callable, short_side: int) -> Resize:
    """The transform's own first step when it is a plain shorter-side Resize (evaluation: exact), else a
    shorter-side downscale to `short_side` (training, before RandomResizedCrop)."""
    first = next(iter(getattr(transform, "transforms", [])), None)
    size = getattr(first, "size", None)
    one_side = isinstance(size, int) or (isinstance(size, (list, tuple)) and len(size) == 1)
    if isinstance(first, T.Resize) and one_side and first.max_size is None:
        return Resize(size if isinstance(size, int) else size[0], first.interpolation, exact=True)
    interpolation = getattr(first, "interpolation", F.InterpolationMode.BILINEAR)
    if not isinstance(interpolation, F.InterpolationMode):  # timm's "random" keeps a tuple of modes
        interpolation = F.InterpolationMode.BILINEAR
    return Resize(short_side, interpolation)


def estimate_bytes(sizes: list[tuple[int, int]], resize: Resize, channels: int) -> int:
    return sum(h * w for h, w in (resize.shape(width, height) for width, height in sizes)) * channels


def choose_storage(requested: str, estimate: int, cache_dir: Path, ram_budget: int) -> str:
    """none/ram/disk: `auto` takes RAM within `ram_budget`, else disk within half its free space, else none."""
    if requested != "auto":
        return requested
    if estimate <= ram_budget:
        return "ram"
    free = shutil.disk_usage(_existing_parent(cache_dir)).free
    return "disk" if estimate <= free * DISK_SHARE_OF_FREE else "none"


def ram_budget(cache_ram_gb: float | None) -> int:
    """cache_ram_gb, else a share of the free memory; never more than the shared memory (/dev/shm, 64 MB in a
    default Docker container) can hold, since the RAM cache lives there."""
    if cache_ram_gb is not None:
        budget = int(cache_ram_gb * 2**30)
    else:
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            available = 4 * 2**30
        budget = int(available * RAM_SHARE_OF_AVAILABLE)
    return min(budget, shared_memory_free())


def shared_memory_free() -> int:
    try:
        return shutil.disk_usage(SHARED_MEMORY).free
    except OSError:
        return 2**62  # no /dev/shm (macOS, Windows): torch shares through other means


def build(load: Callable[[int], Image.Image], files: list[str], resize: Resize, mode: str, storage: str,
          cache_file: Path | None = None, workers: int | None = None) -> ImageCache:
    """Decode + resize every image once. `files`: each index's path (disk caches key entries by it)."""
    start = time.perf_counter()
    if storage == "ram":
        cache = _build_ram(load, len(files), resize, mode, workers)
    elif storage == "disk":
        if cache_file is None:
            raise ValueError("a disk cache needs a cache_file")
        cache = _build_disk(load, files, resize, mode, cache_file, workers)
    else:
        raise ValueError(f"unknown cache storage {storage!r}")
    logger.info("image cache (%s): %d images, %.0f MB, ready in %.1f s%s", storage, len(files), cache.nbytes / 1e6,
                time.perf_counter() - start, f" ({cache.path})" if cache.path else "")
    return cache


def _decode(load: Callable[[int], Image.Image], resize: Resize, index: int) -> np.ndarray | str:
    try:
        return np.asarray(resize(load(index)), dtype=np.uint8)
    except (UserError, OSError) as err:
        return str(err)


def _decoded(load, resize, indices, workers):
    """(index, pixels or error) in order, a few images in flight at a time (memory stays bounded); PIL releases
    the GIL while it decodes, so threads scale."""
    threads = workers or cores_per_process()
    with ThreadPoolExecutor(max_workers=threads) as pool, \
            progress_bar(total=len(indices), desc="image cache") as bar:
        pending: collections.deque = collections.deque()
        for index in indices:
            pending.append((index, pool.submit(_decode, load, resize, index)))
            if len(pending) >= 4 * threads:
                done_index, future = pending.popleft()
                bar.update()
                yield done_index, future.result()
        while pending:
            done_index, future = pending.popleft()
            bar.update()
            yield done_index, future.result()


def _shape(pixels: np.ndarray) -> tuple[int, int, int]:
    return (*pixels.shape[:2], pixels.shape[2] if pixels.ndim == 3 else 1)


def _build_ram(load, count: int, resize: Resize, mode: str, workers: int | None) -> ImageCache:
    arrays: list[np.ndarray | None] = [None] * count
    errors: dict[int, str] = {}
    for index, result in _decoded(load, resize, range(count), workers):
        if isinstance(result, str):
            errors[index] = result
        else:
            arrays[index] = result
    shapes = np.array([_shape(a) if a is not None else (0, 0, 0) for a in arrays], dtype=np.int64).reshape(-1, 3)
    offsets = np.concatenate([[0], np.cumsum(shapes.prod(axis=1))[:-1]]).astype(np.int64)
    data = torch.empty(int(shapes.prod(axis=1).sum()), dtype=torch.uint8).share_memory_()
    flat = data.numpy()
    for index, pixels in enumerate(arrays):
        if pixels is not None:  # moved image by image: the shared pages fill as the private copies go
            flat[offsets[index]:offsets[index] + pixels.size] = pixels.reshape(-1)
            arrays[index] = None
    return ImageCache(data, offsets, shapes, mode, errors=errors)


def _build_disk(load, files: list[str], resize: Resize, mode: str, cache_file: Path,
                workers: int | None) -> ImageCache:
    """Reuse every entry whose file kept its size and mtime; decode the rest; write a new file only on change."""
    stats = [cache_file_format.file_stat(path) for path in files]
    old = cache_file_format.read_index(cache_file)
    reusable: dict[str, tuple[int, list[int]]] = {}
    if old is not None:
        if [e[0] for e in old["entries"]] == files and [e[1:3] for e in old["entries"]] == stats:
            return _from_index(old, cache_file, mode)
        current = dict(zip(files, stats))
        reusable = {e[0]: (e[3], e[4:7]) for e in old["entries"] if e[4] > 0 and e[1:3] == current.get(e[0])}
    old_data = np.memmap(cache_file, dtype=np.uint8, mode="r") if reusable else None
    todo = [i for i, path in enumerate(files) if path not in reusable]
    decoded = _decoded(load, resize, todo, workers)  # consumed in file order as the data file is written

    def blocks():
        for path in files:
            if path in reusable:
                start, shape = reusable[path]
                yield old_data[start:start + int(np.prod(shape))], shape, ""
                continue
            _, result = next(decoded)
            if isinstance(result, str):
                yield np.empty(0, np.uint8), [0, 0, 0], result
            else:
                yield result.reshape(-1), list(_shape(result)), ""

    index = cache_file_format.write(cache_file, files, stats, blocks())
    logger.info("image cache: %d of %d images decoded, %d reused from %s", len(todo), len(files),
                len(files) - len(todo), cache_file)
    return _from_index(index, cache_file, mode)


def _from_index(index: dict, cache_file: Path, mode: str) -> ImageCache:
    entries = index["entries"]
    offsets = np.array([e[3] for e in entries], dtype=np.int64)
    shapes = np.array([e[4:7] for e in entries], dtype=np.int64).reshape(-1, 3)
    errors = {i: e[7] for i, e in enumerate(entries) if e[7]}
    return ImageCache(None, offsets, shapes, mode, path=cache_file, errors=errors)


def _existing_parent(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def attach_image_cache(dataset, transform: Callable, requested: str, cache_dir: Path, name: str,
                       short_side: int, ram_gb: float | None) -> str:
    """Build the cache of an ImageDataset read from files and attach it (`load_image` then reads it); returns
    the storage used. Data already decoded in memory (digits, CIFAR) is never cached again."""
    if requested == "none" or getattr(dataset, "arrays", None) is not None:
        if requested not in ("none", "auto"):
            logger.info("cache_images: %s images are already decoded in memory; nothing to cache", name)
        return "none"
    resize = plan_resize(transform, short_side)
    channels = 1 if dataset.image_mode == "L" else 3
    files = [path for path, _ in dataset.samples]
    estimate = estimate_bytes([dataset.sizes.get(path, (0, 0)) for path in files], resize, channels)
    storage = choose_storage(requested, estimate, cache_dir, ram_budget(ram_gb))
    if storage == "none":
        logger.info("image cache: %s images need %.1f GB, more than the RAM budget and half the free disk; "
                    "decoding every epoch", name, estimate / 2**30)
        return storage
    if storage == "ram" and requested == "ram" and estimate > shared_memory_free():
        raise UserError(f"cache_images: ram needs {estimate / 1e6:.0f} MB of shared memory but {SHARED_MEMORY} has "
                        f"{shared_memory_free() / 1e6:.0f} MB free; use cache_images: disk, or enlarge it "
                        "(docker run --shm-size)")
    root = os.path.commonpath([os.path.abspath(p) for p in files]) if files else ""
    cache_file = cache_file_for(cache_dir, name, f"{resize.key()}-{dataset.image_mode}-{dataset.crop_bottom}-"
                                f"{dataset.draft_size}-{root}")
    dataset.image_cache = None
    try:
        dataset.image_cache = build(dataset.load_image, files, resize, dataset.image_mode, storage, cache_file)
    except OSError as err:
        if requested != "auto":
            raise UserError(f"cannot write the image cache in {cache_dir} ({err}); set cache_dir to a writable "
                            "folder with space, or cache_images: none") from None
        logger.warning("image cache: off, %s could not be written (%s)", cache_dir, err)
        return "none"
    return storage
