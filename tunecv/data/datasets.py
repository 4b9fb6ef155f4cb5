"""Datasets: `create_dataset(cfg.data, split, transform)` with folder-layout checks; exposes `.classes`.

Must not batch or shuffle.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from torch.utils.data import Dataset

from tunecv.errors import UserError

if TYPE_CHECKING:
    from tunecv.config import DataConfig

logger = logging.getLogger(__name__)

# Every format PIL opens, but those that need an external program or plug-in (their files are not photos anyway).
_NEEDS_PLUGIN = {"BUFR", "GRIB", "HDF5", "EPS", "MPEG", "WMF"}
IMAGE_EXTENSIONS = tuple(sorted(ext for ext, fmt in Image.registered_extensions().items()
                                if fmt in Image.OPEN and fmt not in _NEEDS_PLUGIN))
UNREADABLE = (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError)
DIGITS_VAL_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0  # fixed, so every run and validate.py see the same digits split


class ImageDataset(Dataset):
    """(image, label) pairs from files or in-memory uint8 arrays; images converted to `image_mode`."""

    def __init__(self, samples: list[tuple[str, int]], classes: list[str], transform: Callable | None,
                 image_mode: str = "RGB", arrays: np.ndarray | None = None) -> None:
        self.samples = samples
        self.classes = classes
        self.targets = [label for _, label in samples]
        self.transform = transform
        self.image_mode = image_mode
        self.arrays = arrays

    def __len__(self) -> int:
        return len(self.samples)

    def load_image(self, index: int) -> Image.Image:
        if self.arrays is not None:
            return Image.fromarray(self.arrays[index]).convert(self.image_mode)
        path = self.samples[index][0]
        try:
            with Image.open(path) as image:
                image = ImageOps.exif_transpose(image)
                if image.mode.startswith("I") or image.mode == "F":
                    image = _to_8bit(image)
                if image.mode in ("RGBA", "LA", "P") and self.image_mode == "RGB":
                    image = _on_white(image)
                return image.convert(self.image_mode)
        except UNREADABLE as err:
            raise unreadable(path, err) from None

    def __getitem__(self, index: int):
        image = self.load_image(index)
        if self.transform is not None:
            image = self.transform(image)
        return image, self.targets[index]


def _to_8bit(image: Image.Image) -> Image.Image:
    """16/32-bit integer and float images: convert("RGB") would clip at 255 (all white); scale the range."""
    pixels = np.asarray(image, dtype=np.float64)
    peak = pixels.max(initial=0.0)
    top = 65535.0 if image.mode.startswith("I;16") or peak > 255 else 1.0 if image.mode == "F" and peak <= 1 else 255.0
    return Image.fromarray(np.clip(pixels * (255.0 / top), 0, 255).astype(np.uint8), "L")


def _on_white(image: Image.Image) -> Image.Image:
    """Composite transparency on white: transparent pixels often hold black, which is not the photo."""
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba)


def create_dataset(cfg: DataConfig, split: str, transform: Callable | None, *,
                   classes: list[str] | None = None, image_mode: str = "RGB") -> ImageDataset:
    """The `split` of the configured dataset. `classes` (from training) fixes the label order.

    Folder layout (MindCV offline / MMPretrain CustomDataset / torchvision ImageFolder)::

        data_dir/
          train/  ants/001.jpg  bees/002.jpg ...
          val/    ants/101.jpg  bees/102.jpg ...
    """
    if cfg.dataset_download:
        logger.info("dataset_download: %s data needs no download; nothing fetched", cfg.dataset)
    check_split(cfg, split)
    if cfg.dataset == "digits":
        dataset = _digits(cfg, split, transform, image_mode)
    elif cfg.dataset == "folder":
        dataset = _image_folder(split_dir(cfg, split), transform, image_mode)
    else:
        raise UserError(f"unknown dataset {cfg.dataset!r}; choose from folder, digits")
    if classes is not None and dataset.classes != classes:
        dataset = _relabel(dataset, classes)
    logger.info("dataset: %s %s: %d images, %d classes", cfg.dataset, split, len(dataset), len(dataset.classes))
    return dataset


def split_dir(cfg: DataConfig, split: str) -> Path:
    root = Path(cfg.data_dir or ".")
    if not root.is_dir():
        raise UserError(f"data_dir {root} does not exist; check --data_dir")
    return root / split


def check_split(cfg: DataConfig, split: str, hint: str = "") -> None:
    """A UserError naming the split folders that do exist, when `split` does not."""
    if cfg.dataset == "digits":
        if split not in (cfg.train_split, cfg.val_split):
            raise UserError(f"digits has the splits {cfg.train_split} and {cfg.val_split}, not {split!r}")
        return
    root = split_dir(cfg, split)
    if not root.is_dir():
        found = sorted(p.name for p in root.parent.iterdir() if p.is_dir() and not p.name.startswith("."))
        raise UserError(f"split folder {root} does not exist (found: {', '.join(found) or 'nothing'}); "
                        f"set train_split/val_split or check data_dir{'; ' + hint if hint else ''}")


def check_num_classes(expected: int | None, classes: list[str], split: str) -> None:
    if expected is not None and expected != len(classes):
        raise UserError(f"num_classes is {expected} but {split} has {len(classes)} classes; "
                        f"set --num_classes {len(classes)} or leave it out")


def _image_folder(root: Path, transform: Callable | None, image_mode: str) -> ImageDataset:
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise UserError(f"{root} has no class folders; expected {root}/<class>/<image>")
    samples: list[tuple[str, int]] = []
    for label, class_dir in enumerate(class_dirs):
        files = _image_files(class_dir)
        if not files:
            raise UserError(f"class folder {class_dir} has no images (.jpg, .png, ... any format PIL reads); "
                            "add images or remove the folder")
        samples.extend((str(path), label) for path in files)
    for path, _ in samples:
        _check_header(path)
    return ImageDataset(samples, [p.name for p in class_dirs], transform, image_mode)


def _image_files(directory: Path) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(directory):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(Path(dirpath) / name for name in sorted(filenames)
                     if not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS))
    return found


def _check_header(path: str) -> None:
    """Reads only the header: catches empty and non-image files before training starts, cheaply."""
    try:
        with Image.open(path):
            pass
    except UNREADABLE as err:
        raise unreadable(path, err) from None


def unreadable(path: str, err: Exception) -> UserError:
    return UserError(f"cannot read image {path} ({err}); remove or replace the file")


def _relabel(dataset: ImageDataset, classes: list[str]) -> ImageDataset:
    unknown = [c for c in dataset.classes if c not in classes]
    if unknown:
        raise UserError(f"classes {', '.join(unknown)} are not among the training/checkpoint classes "
                        f"({', '.join(classes[:10])}{', ...' if len(classes) > 10 else ''}); check the split")
    index = {name: classes.index(name) for name in dataset.classes}
    samples = [(path, index[dataset.classes[label]]) for path, label in dataset.samples]
    return ImageDataset(samples, list(classes), dataset.transform, dataset.image_mode, dataset.arrays)


def _digits(cfg: DataConfig, split: str, transform: Callable | None, image_mode: str) -> ImageDataset:
    """scikit-learn's 1797 handwritten 8x8 digits, split 80/20 stratified with a fixed seed."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.clip(digits.images * (255.0 / 16.0), 0, 255).astype(np.uint8)
    indices = np.arange(len(images))
    train_idx, val_idx = train_test_split(indices, test_size=DIGITS_VAL_FRACTION, random_state=DIGITS_SPLIT_SEED,
                                          stratify=digits.target)
    chosen = np.sort(train_idx if split == cfg.train_split else val_idx)
    samples = [(f"digits/{split}/{i:04d}", int(digits.target[i])) for i in chosen]
    return ImageDataset(samples, [str(d) for d in range(10)], transform, image_mode, arrays=images[chosen])
