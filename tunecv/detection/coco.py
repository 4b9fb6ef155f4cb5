"""COCO-format detection data: `read_coco` checks and indexes an annotation file (contiguous labels from COCO's
sparse category ids, names kept); `CocoDetection` yields images with torchvision detection targets (boxes,
labels, masks)."""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms.functional import pil_to_tensor

from tunecv.errors import UserError

# the fields each part of a COCO file must have, and what tunecv reads them for
REQUIRED_FIELDS = {"images": ("id", "file_name", "height", "width"),
                   "annotations": ("image_id", "category_id", "bbox"), "categories": ("id", "name")}


@dataclass
class CocoIndex:
    """An annotation file, checked. Label i + 1 is `classes[i]` (0 is torchvision's background); `category_ids[i]`
    is that class's id in the file."""

    path: Path
    classes: list[str]
    category_ids: list[int]
    images: list[dict[str, Any]]  # in file order; without annotations only when kept
    annotations: dict[int, list[dict[str, Any]]]  # image id -> its annotations (with id, iscrowd and area)

    def ground_truth(self) -> dict[str, Any]:
        """The checked file as pycocotools' COCO takes it (`COCO.dataset`)."""
        return {"images": self.images, "annotations": [a for anns in self.annotations.values() for a in anns],
                "categories": [{"id": i, "name": n} for i, n in zip(self.category_ids, self.classes)]}

    def label(self, category_id: int) -> int:
        return self.category_ids.index(category_id) + 1


def read_coco(ann_file: str | os.PathLike, keep_empty: bool = False) -> CocoIndex:
    """Read and check a COCO instances file. `keep_empty`: keep images without a (non-crowd) annotation, as
    negatives; by default they are dropped, as MMDetection's `filter_empty_gt` does.

    Raises:
        UserError: a missing file, not JSON, or not COCO (names the missing field and where).
    """
    path = Path(ann_file)
    if not path.is_file():
        raise UserError(f"annotation file {path} not found; check train_ann_file / val_ann_file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise UserError(f"{path} is not JSON ({err}); give a COCO instances file") from None
    _check_fields(data, path)
    categories = sorted(data["categories"], key=lambda c: c["id"])  # COCO's order: by id
    category_ids = [c["id"] for c in categories]
    known_images = {image["id"] for image in data["images"]}
    annotations: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for i, ann in enumerate(data["annotations"]):
        _check_annotation(ann, i, path)
        ann.setdefault("id", i + 1)  # COCO's evaluation indexes by id, and weighs crowd and area
        ann.setdefault("iscrowd", 0)
        ann.setdefault("area", float(ann["bbox"][2] * ann["bbox"][3]))
        if ann["category_id"] not in category_ids:
            raise UserError(f"{path}: annotations[{i}] has category_id {ann['category_id']}, which is not in "
                            f"categories (ids {category_ids[:10]}); fix the file")
        if ann["image_id"] not in known_images:
            raise UserError(f"{path}: annotations[{i}] has image_id {ann['image_id']}, which is not in images; "
                            "fix the file")
        annotations[ann["image_id"]].append(ann)
    images = [image for image in data["images"]
              if keep_empty or any(not ann.get("iscrowd", 0) for ann in annotations[image["id"]])]
    if not images:
        raise UserError(f"{path}: no image has an annotation; set keep_empty_images true to train on negatives "
                        "only, or check the file")
    return CocoIndex(path, [c["name"] for c in categories], category_ids, images, dict(annotations))


def _check_fields(data: Any, path: Path) -> None:
    if not isinstance(data, dict):
        raise UserError(f"{path} holds a JSON {type(data).__name__}, not a COCO object with images, annotations "
                        "and categories")
    for part, fields in REQUIRED_FIELDS.items():
        if not isinstance(data.get(part), list):
            raise UserError(f"{path} is not a COCO instances file: no '{part}' list; give a file with images, "
                            "annotations and categories")
        for i, item in enumerate(data[part]):
            missing = [f for f in fields if not isinstance(item, dict) or f not in item]
            if missing:
                raise UserError(f"{path} is not a COCO instances file: {part}[{i}] has no '{missing[0]}'")
    if not data["categories"]:
        raise UserError(f"{path} has no categories; a detector needs at least one class")


def _check_annotation(ann: dict[str, Any], i: int, path: Path) -> None:
    """The fields a training step and COCO's evaluation read, of the types they need."""
    bbox = ann["bbox"]
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox)):
        raise UserError(f"{path}: annotations[{i}] has bbox {str(bbox)[:60]}; COCO boxes are [x, y, width, height]")
    segmentation = ann.get("segmentation")
    polygons = isinstance(segmentation, list) and all(
        isinstance(p, list) and len(p) % 2 == 0 and all(isinstance(v, (int, float)) for v in p) for p in segmentation)
    rle = isinstance(segmentation, dict) and {"counts", "size"} <= set(segmentation)
    if segmentation not in (None, []) and not (polygons or rle):
        raise UserError(f"{path}: annotations[{i}] has a segmentation that is neither polygons ([[x1, y1, x2, y2, "
                        "...], ...]) nor RLE ({counts, size}); fix the file")


def decode_mask(segmentation: Any, height: int, width: int) -> np.ndarray:
    """A (height, width) uint8 mask from COCO polygons, uncompressed RLE (counts as a list) or compressed RLE."""
    from pycocotools import mask as coco_mask

    if isinstance(segmentation, list):  # polygons: one or several outlines of one object
        rles = coco_mask.frPyObjects([p for p in segmentation if len(p) >= 6], height, width)
        rle = coco_mask.merge(rles) if rles else coco_mask.encode(np.zeros((height, width), np.uint8, order="F"))
    elif isinstance(segmentation.get("counts"), list):
        rle = coco_mask.frPyObjects(segmentation, height, width)
    else:
        rle = segmentation
    return coco_mask.decode(rle).astype(np.uint8)


class CocoDetection(Dataset):
    """Images of `index` under `image_root` with targets as torchvision's detection models take them: boxes
    (x1, y1, x2, y2, float), labels (1..K), masks (N, H, W uint8, `with_masks`), image_id. Crowd regions and boxes
    under a pixel wide are left out (as torchvision's references do). `transform`: (image, target) -> (image,
    target), e.g. `HorizontalFlip` in training."""

    def __init__(self, index: CocoIndex, image_root: str | os.PathLike, with_masks: bool = False,
                 transform: Callable | None = None) -> None:
        self.index, self.image_root = index, Path(image_root)
        self.with_masks, self.transform = with_masks, transform
        self.classes = index.classes

    def __len__(self) -> int:
        return len(self.index.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        info = self.index.images[i]
        path = self.image_root / info["file_name"]
        try:
            with Image.open(path) as raw:
                image = raw.convert("RGB")
        except OSError as err:
            raise UserError(f"cannot read image {path} ({err}); check image_root") from None
        target = self.target(info["id"], image.height, image.width)
        tensor = pil_to_tensor(image).float().div_(255)
        if self.transform is not None:
            tensor, target = self.transform(tensor, target)
        return tensor, target

    def target(self, image_id: int, height: int, width: int) -> dict[str, torch.Tensor]:
        kept = [ann for ann in self.index.annotations.get(image_id, [])
                if not ann.get("iscrowd", 0) and ann["bbox"][2] >= 1 and ann["bbox"][3] >= 1]
        boxes = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (ann["bbox"] for ann in kept)],
                             dtype=torch.float32).reshape(-1, 4)
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
        target = {"boxes": boxes, "labels": torch.tensor([self.index.label(a["category_id"]) for a in kept],
                                                         dtype=torch.int64),
                  "image_id": torch.tensor(image_id)}
        if self.with_masks:
            masks = [decode_mask(ann["segmentation"], height, width) if ann.get("segmentation") else
                     _box_mask(ann["bbox"], height, width) for ann in kept]
            target["masks"] = torch.from_numpy(np.stack(masks)) if masks else \
                torch.zeros((0, height, width), dtype=torch.uint8)
        return target


def _box_mask(bbox: list[float], height: int, width: int) -> np.ndarray:
    """An annotation without a segmentation: its box as the mask."""
    mask = np.zeros((height, width), np.uint8)
    x, y, w, h = (round(v) for v in bbox)
    mask[max(y, 0):y + h, max(x, 0):x + w] = 1
    return mask


class HorizontalFlip:
    """Flip image, boxes and masks together with probability `p` (the detection training transform)."""

    def __init__(self, p: float) -> None:
        self.p = p

    def __call__(self, image: torch.Tensor, target: dict[str, torch.Tensor]
                 ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if torch.rand(()) < self.p:
            return flip_horizontally(image, target)
        return image, target


def flip_horizontally(image: torch.Tensor, target: dict[str, torch.Tensor]
                      ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    width = image.shape[-1]
    target = dict(target)
    boxes = target["boxes"].clone()
    boxes[:, [0, 2]] = width - target["boxes"][:, [2, 0]]
    target["boxes"] = boxes
    if "masks" in target:
        target["masks"] = target["masks"].flip(-1)
    return image.flip(-1), target


def collate(batch: list[tuple[torch.Tensor, dict]]) -> tuple[list[torch.Tensor], list[dict]]:
    """Detection batches are lists: images differ in size, targets in length."""
    images, targets = zip(*batch)
    return list(images), list(targets)
