"""Datasets: `create_dataset(cfg.data, split, transform)` with folder-layout checks; exposes `.classes`.

Must not batch or shuffle.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from torch.utils.data import Dataset

from tunecv.config import DataConfig
from tunecv.data import digits, layouts, pixels, torchvision_sets
from tunecv.data.bad_images import list_bad_image
from tunecv.data.cache_file import file_stat
from tunecv.data.scan import ScanCache, scan_images
from tunecv.errors import CacheChanged, UserError

logger = logging.getLogger(__name__)

# Every format PIL opens, but those that need an external program or plug-in (their files are not photos anyway).
_NEEDS_PLUGIN = {"BUFR", "GRIB", "HDF5", "EPS", "MPEG", "WMF"}
IMAGE_EXTENSIONS = tuple(sorted(ext for ext, fmt in Image.registered_extensions().items()
                                if fmt in Image.OPEN and fmt not in _NEEDS_PLUGIN))
UNREADABLE = (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError)


class ImageDataset(Dataset):
    """(image, label) pairs from files or in-memory uint8 arrays; images converted to `image_mode`."""

    def __init__(self, samples: list[tuple[str, int]], classes: list[str], transform: Callable | None,
                 image_mode: str = "RGB", arrays: np.ndarray | None = None, crop_bottom: int = 0,
                 skip_unreadable: bool = False, draft_size: int | None = None) -> None:
        self.samples = samples
        self.classes = classes
        self.targets = [label for _, label in samples]
        self.transform = transform
        self.image_mode = image_mode
        self.arrays = arrays
        self.crop_bottom = crop_bottom
        self.skip_unreadable = skip_unreadable
        self.draft_size = draft_size  # JPEGs are decoded at the smallest power-of-2 scale covering this
        self.bad_images: list[tuple[str, str]] = []  # (path, why) left out at the start-up scan
        self.sizes: dict[str, tuple[int, int]] = {}  # path → (width, height), from the scan
        self.hashes: dict[str, str] = {}  # path → content digest, from the scan
        self.dhashes: dict[str, int] = {}  # path → perceptual hash, from the scan
        self.scan_cache: ScanCache | None = None  # what the run writes to scan_cache.json once it starts
        self.failed_since_scan: set[str] = set()  # passed the scan, failed later: warned once (per process)
        self.bad_images_file: Path | None = None  # where such a file is listed, once the run folder is open
        self.image_cache = None  # an ImageCache of the decoded pixels (tunecv.data.image_cache), when built

    def __len__(self) -> int:
        return len(self.samples)

    def load_image(self, index: int) -> Image.Image:
        if self.arrays is not None:
            return Image.fromarray(self.arrays[index]).convert(self.image_mode)
        if self.image_cache is not None:
            return self.image_cache.image(index)
        path = self.samples[index][0]
        try:
            with Image.open(path) as image:  # an animated GIF/WebP opens at its first frame
                crop = self.crop_bottom
                if self.draft_size and image.format == "JPEG":
                    # decode at 1/2, 1/4 or 1/8 scale when that still covers draft_size: far less work
                    full_height = image.height
                    image.draft(image.mode, (self.draft_size, self.draft_size))
                    crop = round(crop * image.height / full_height)
                if crop and image.height > crop:
                    image = image.crop((0, 0, image.width, image.height - crop))
                image = ImageOps.exif_transpose(image)
                if image.mode.startswith("I") or image.mode == "F":
                    image = pixels.to_8bit(image)
                if image.mode in ("RGBA", "LA", "P") and self.image_mode == "RGB":
                    image = pixels.on_white(image)
                return image.convert(self.image_mode)
        except UNREADABLE as err:
            raise unreadable(path, err) from None

    def __getitem__(self, index: int):
        """(image, label, index); None for a file that fails to decode mid-run when skipping unreadable files
        (the loader's collate drops it, so a truncated JPEG never kills an epoch)."""
        path = self.samples[index][0]
        if path in self.failed_since_scan:
            return None
        try:
            image = self.load_image(index)
        except CacheChanged:
            raise
        except UserError as err:
            if not self.skip_unreadable:
                raise
            self.failed_since_scan.add(path)
            # files no scan listed (predict's) are reported by their caller, all in one line
            logger.log(logging.WARNING if self.scan_cache is not None else logging.DEBUG, "%s; %s", err,
                       self._since_scan(path))
            list_bad_image(self.bad_images_file, path, str(err))
            return None
        if self.transform is not None:
            image = self.transform(image)
        return image, self.targets[index], index

    def _since_scan(self, path: str) -> str:
        """Why a file that passed the start-up scan fails now: usually it was rewritten or truncated since."""
        entry = self.scan_cache.entries.get(path) if self.scan_cache is not None else None
        if entry is None:  # not from a scanned listing (predict's files)
            return "skipped"
        if file_stat(path) == entry[:2]:
            return "it passed the start-up scan's reduced-size decode, so it is skipped for the rest of the run"
        return "it changed since the start-up scan, so it is skipped for the rest of the run"


def create_dataset(cfg: DataConfig, split: str, transform: Callable | None, *,
                   classes: list[str] | None = None, image_mode: str = "RGB",
                   scan_cache: Path | None = None, draft_size: int | None = None) -> ImageDataset:
    """The `split` (a train_split/val_split name) of the configured data. `classes` (from training or a
    checkpoint) fixes the label order. The layouts, `dataset: auto` detecting which one data_dir holds::

        folder         data_dir/train/ants/001.jpg, data_dir/val/ants/101.jpg (MindCV, MMPretrain, ImageFolder)
        single_folder  data_dir/ants/001.jpg: a seeded, stratified val_fraction is held out for val
        list           train_list.txt lines `relative/path.jpg label` (PaddleClas, MMPretrain ann_file)
        csv            train.csv with a header: path,label (fastai, Kaggle)
        aircraft       FGVC-Aircraft: data/images/*.jpg + data/images_variant_train.txt
        digits         scikit-learn's handwritten digits (offline demo)
        cifar10, flowers102, ...  torchvision's datasets in data_dir (dataset_download: true fetches them)
    """
    if cfg.dataset_download and cfg.dataset not in torchvision_sets.DATASETS:
        logger.info("dataset_download: %s data needs no download; nothing fetched", cfg.dataset)
    if cfg.dataset == "digits":
        check_split(cfg, split)
        samples, arrays = digits.digits_split(split, training=split == cfg.train_split)
        dataset = ImageDataset(samples, list(digits.CLASSES), transform, image_mode, arrays=arrays)
    elif cfg.dataset in torchvision_sets.DATASETS:
        labelled, arrays = torchvision_sets.load(cfg.dataset, cfg.data_dir or ".", split, cfg.dataset_download,
                                                 cfg.annotation_level)
        dataset = _from_labelled(labelled, transform, image_mode, cfg.on_bad_image, scan_cache) if arrays is None \
            else _from_arrays(labelled, arrays, transform, image_mode)
    else:
        dataset = _from_labelled(read_split(cfg, split), transform, image_mode, cfg.on_bad_image, scan_cache)
    if classes is not None and dataset.classes != classes:
        dataset = _relabel(dataset, classes)
    dataset.draft_size = draft_size if cfg.jpeg_draft else None
    logger.info("dataset: %s %s: %d images, %d classes", cfg.dataset, split, len(dataset), len(dataset.classes))
    return dataset


def resolve_layout(cfg: DataConfig) -> DataConfig:
    """The config with `dataset: auto` replaced by the layout found in data_dir (`tunecv.resolve`'s: the other
    functions here take the resolved layout)."""
    return layouts.detect_layout(cfg, IMAGE_EXTENSIONS)


def dataset_classes(cfg: DataConfig) -> list[str]:
    """The training split's class names in label order, read from the listing (no image is opened)."""
    if cfg.dataset == "digits":
        return list(digits.CLASSES)
    if cfg.dataset in torchvision_sets.DATASETS:
        labelled, _ = torchvision_sets.load(cfg.dataset, cfg.data_dir or ".", cfg.train_split, cfg.dataset_download,
                                            cfg.annotation_level)
        return class_names(labelled)
    return class_names(read_split(cfg, cfg.train_split))


def class_names(labelled: layouts.Labelled) -> list[str]:
    """The class list a listing gives (the list file's names, else its labels sorted)."""
    return list(labelled.classes or sorted({name for _, name in labelled.pairs}))


def data_path(cfg: DataConfig, value: str) -> Path:
    """Paths in the config: absolute, else relative to data_dir when that exists there, else to the cwd."""
    path = Path(value).expanduser()
    if not path.is_absolute() and cfg.data_dir and (Path(cfg.data_dir) / path).exists():
        return Path(cfg.data_dir) / path
    return path


def _list_for(cfg: DataConfig, split: str) -> Path:
    key = "train_list" if split == cfg.train_split else "val_list"
    path = data_path(cfg, getattr(cfg, key))
    if not path.is_file():
        raise UserError(f"{key} {path} not found; check the path")
    return path


def read_split(cfg: DataConfig, split: str) -> layouts.Labelled:
    """(path, class name) pairs of a split, in the configured (resolved) layout."""
    check_split(cfg, split)
    root = Path(cfg.data_dir or ".")
    if cfg.dataset == "folder":
        return layouts.class_folders(root / split, IMAGE_EXTENSIONS)
    if cfg.dataset == "single_folder":
        everything = layouts.class_folders(root, IMAGE_EXTENSIONS)
        train, val = layouts.stratified_split(everything.pairs, cfg.val_fraction)
        return layouts.Labelled(train if split == cfg.train_split else val, everything.classes)
    if cfg.dataset == "aircraft":
        return layouts.read_aircraft(root, split, cfg.annotation_level)
    image_root = data_path(cfg, cfg.image_root) if cfg.image_root else root
    class_names = layouts.read_class_list(data_path(cfg, cfg.class_list)) if cfg.class_list else None
    if cfg.dataset == "csv":
        return layouts.read_csv_file(_list_for(cfg, split), image_root, class_names, cfg.path_column,
                                     cfg.label_column)
    return layouts.read_list_file(_list_for(cfg, split), image_root, class_names)


def check_split(cfg: DataConfig, split: str, hint: str = "") -> None:
    """A UserError saying what exists, when `split` does not."""
    suffix = f"; {hint}" if hint else ""
    if cfg.dataset in torchvision_sets.DATASETS:
        torchvision_sets.torchvision_split(cfg.dataset, split)
        return
    if cfg.dataset in ("digits", "single_folder"):
        if split not in (cfg.train_split, cfg.val_split):
            raise UserError(f"{cfg.dataset} data has the splits {cfg.train_split} and {cfg.val_split}, not {split!r}")
        return
    if cfg.dataset in ("list", "csv"):
        if split not in (cfg.train_split, cfg.val_split):
            raise UserError(f"{cfg.dataset} data has the splits {cfg.train_split} (train_list) and "
                            f"{cfg.val_split} (val_list), not {split!r}")
        key = "train_list" if split == cfg.train_split else "val_list"
        if not getattr(cfg, key):
            raise UserError(f"{key} is not set; give the {split} list file{suffix}")
        return
    root = Path(cfg.data_dir or ".")
    if not root.is_dir():
        raise UserError(f"data_dir {root} does not exist; check --data_dir")
    if cfg.dataset == "aircraft":
        return
    if not (root / split).is_dir():
        found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        raise UserError(f"split folder {root / split} does not exist (found: {', '.join(found) or 'nothing'}); "
                        f"set train_split/val_split or check data_dir{suffix}")


def _from_arrays(labelled: layouts.Labelled, arrays: np.ndarray, transform: Callable | None,
                 image_mode: str) -> ImageDataset:
    index = {name: i for i, name in enumerate(labelled.classes)}
    samples = [(sample_id, index[name]) for sample_id, name in labelled.pairs]
    return ImageDataset(samples, list(labelled.classes), transform, image_mode, arrays=arrays)


def _from_labelled(labelled: layouts.Labelled, transform: Callable | None, image_mode: str, on_bad_image: str,
                   scan_cache: Path | None) -> ImageDataset:
    classes = class_names(labelled)
    index = {name: i for i, name in enumerate(classes)}
    unknown = sorted({name for _, name in labelled.pairs if name not in index})
    if unknown:
        raise UserError(f"classes {', '.join(unknown[:5])} are not in the class list; check class_list")
    scan = scan_images([path for path, _ in labelled.pairs], scan_cache)
    logger.debug("scan: %d files in %.2f s (%d from cache)", len(labelled.pairs), scan.seconds, scan.from_cache)
    missing = [path for path, why in scan.bad.items() if why == "file not found"]
    if missing and len(missing) == len(labelled.pairs):
        raise UserError(f"all {len(missing)} listed images are not found (first: {missing[0]}); "
                        "check image_root (data_prefix) and the paths in the list file")
    if scan.bad and on_bad_image == "error":
        path, why = next(iter(scan.bad.items()))
        raise UserError(f"cannot read image {path} ({why}); remove or replace it, or set on_bad_image: skip")
    for path, why in scan.bad.items():
        logger.warning("skipping unreadable image %s (%s)", path, why)
    kept = [(path, name) for path, name in labelled.pairs if path not in scan.bad]
    left = {name for _, name in kept}
    emptied = [name for name in {n for _, n in labelled.pairs} if name not in left]
    if emptied:
        raise UserError(f"class {sorted(emptied)[0]} has no readable images; fix or remove its files")
    samples = [(path, index[name]) for path, name in kept]
    dataset = ImageDataset(samples, list(classes), transform, image_mode, crop_bottom=labelled.crop_bottom,
                           skip_unreadable=on_bad_image == "skip")
    dataset.bad_images = sorted(scan.bad.items())
    dataset.sizes, dataset.hashes, dataset.dhashes, dataset.scan_cache = scan.sizes, scan.hashes, scan.dhashes, \
        scan.cache
    return dataset


def unreadable(path: str, err: Exception) -> UserError:
    return UserError(f"cannot read image {path} ({err}); remove or replace the file")


def _relabel(dataset: ImageDataset, classes: list[str]) -> ImageDataset:
    unknown = [c for c in dataset.classes if c not in classes]
    if unknown:
        raise UserError(f"classes {', '.join(unknown)} are not among the training/checkpoint classes "
                        f"({', '.join(classes[:10])}{', ...' if len(classes) > 10 else ''}); check the split")
    index = {name: classes.index(name) for name in dataset.classes}
    samples = [(path, index[dataset.classes[label]]) for path, label in dataset.samples]
    relabelled = ImageDataset(samples, list(classes), dataset.transform, dataset.image_mode, dataset.arrays,
                              dataset.crop_bottom, dataset.skip_unreadable)
    for found_by_scan in ("bad_images", "sizes", "hashes", "dhashes", "scan_cache"):
        setattr(relabelled, found_by_scan, getattr(dataset, found_by_scan))
    return relabelled

