"""A detection run's data: the COCO split files (images and annotations) and their loader; the digest that tells a
resumed run its annotations changed."""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

from torch.utils.data import DataLoader

from tunecv.config import Config
from tunecv.data.loader import create_loader
from tunecv.detection.coco import CocoDetection, CocoIndex, collate, read_coco
from tunecv.detection.models import detector_spec
from tunecv.detection.settings import ann_file, image_dir
from tunecv.errors import UserError
from tunecv.utils import distributed


def split_index(cfg: Config, split: str, given_ann_file: str | None, training: bool) -> CocoIndex:
    """A split's annotations. Validation keeps images without annotations: COCO's mAP counts the false detections
    on them."""
    if not Path(cfg.data.data_dir).is_dir():
        raise UserError(f"data_dir {cfg.data.data_dir} not found; check the path")
    path = ann_file(cfg, split, given_ann_file)
    if not path.is_file():
        key = "train_ann_file" if training else "val_ann_file"
        looked = path if path.is_absolute() else Path(cfg.data.data_dir) / path
        raise UserError(f"annotation file {looked} of split {split} not found; set {key}, or put the COCO json "
                        "there")
    stat = path.stat()
    return _read(path, cfg.detection.keep_empty_images or not training, (stat.st_mtime_ns, stat.st_size))


@functools.lru_cache(maxsize=4)  # the class list is read before the datasets are built: one read serves both
def _read(path: Path, keep_empty: bool, version: tuple[int, int]) -> CocoIndex:
    """`version` (modification time, size): an edited file is read again."""
    return read_coco(path, keep_empty=keep_empty)


def detection_set(cfg: Config, split: str, given_ann_file: str | None, training: bool) -> CocoDetection:
    """A split's images and annotations (`transform`: set by the loader's stage)."""
    index = split_index(cfg, split, given_ann_file, training)
    folder = image_dir(cfg, split)
    if not folder.is_dir():
        raise UserError(f"image folder {folder} not found; the file_names of {index.path.name} are read below "
                        "<image_root or data_dir>/<split>: check image_root, train_split and val_split")
    return CocoDetection(index, folder, with_masks=detector_spec(cfg.model.model).masks)


def check_same_classes(train: CocoIndex, val: CocoIndex) -> None:
    if (train.classes, train.category_ids) != (val.classes, val.category_ids):
        raise UserError(f"{val.path.name} has categories {list(zip(val.category_ids, val.classes))[:5]}, "
                        f"{train.path.name} has {list(zip(train.category_ids, train.classes))[:5]}; both files "
                        "need the same categories list")


def detection_loader(dataset: CocoDetection, cfg: Config, training: bool, pin_memory: bool) -> DataLoader:
    return create_loader(dataset, cfg.loader, is_training=training, seed=cfg.train.seed, pin_memory=pin_memory,
                         rank=distributed.rank(), world_size=distributed.world_size(), collate_fn=collate)


def annotations_fingerprint(sets: list[CocoDetection | None]) -> str:
    """A digest of the annotation files' bytes: another file, or an edited one, is other data."""
    digest = hashlib.sha256()
    for dataset in sets:
        if dataset is not None:
            digest.update(dataset.index.path.read_bytes())
    return digest.hexdigest()[:16]
