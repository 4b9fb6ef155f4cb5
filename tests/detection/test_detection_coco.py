"""COCO parsing: sparse category ids become contiguous labels with their names, polygon and RLE masks decode to
the annotated shapes, empty images are dropped or kept, and a file that is not COCO is one clear error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tools.make_shapes import make_shapes
from tunecv.detection.coco import CocoDetection, collate, decode_mask, flip_horizontally, read_coco
from tunecv.errors import UserError


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shapes")
    make_shapes(root, ["circle", "square", "triangle"], train=6, val=2, size=96, seed=0)
    return root


def test_sparse_category_ids_become_contiguous_labels(shapes):
    index = read_coco(shapes / "annotations" / "instances_train.json")
    assert index.classes == ["circle", "square", "triangle"] and index.category_ids == [11, 21, 31]
    assert [index.label(c) for c in (11, 21, 31)] == [1, 2, 3]  # 0 is the background
    dataset = CocoDetection(index, shapes / "train", with_masks=True)
    labels = torch.cat([dataset[i][1]["labels"] for i in range(len(dataset))])
    assert set(labels.tolist()) <= {1, 2, 3} and len(labels) == sum(map(len, index.annotations.values()))


def test_masks_match_their_boxes_and_areas(shapes):
    index = read_coco(shapes / "annotations" / "instances_train.json")
    image, target = CocoDetection(index, shapes / "train", with_masks=True)[0]
    anns = index.annotations[index.images[0]["id"]]
    assert image.shape == (3, 96, 96) and 0 <= image.min() and image.max() <= 1
    assert target["masks"].shape == (len(anns), 96, 96) and target["masks"].dtype == torch.uint8
    for mask, box, ann in zip(target["masks"], target["boxes"], anns):
        ys, xs = torch.nonzero(mask, as_tuple=True)
        assert abs(xs.min() - box[0]) <= 1.5 and abs(xs.max() + 1 - box[2]) <= 1.5
        assert abs(ys.min() - box[1]) <= 1.5 and abs(ys.max() + 1 - box[3]) <= 1.5
        assert int(mask.sum()) == pytest.approx(ann["area"], rel=0.08)


def test_rle_masks_decode_like_their_polygon(shapes):
    from pycocotools import mask as coco_mask

    ann = read_coco(shapes / "annotations" / "instances_train.json").annotations[1][0]
    polygon = decode_mask(ann["segmentation"], 96, 96)
    compressed = coco_mask.encode(np.asfortranarray(polygon))
    assert np.array_equal(decode_mask(compressed, 96, 96), polygon)
    runs, value, count = [], 0, 0  # uncompressed RLE: column-major run lengths, starting with zeros
    for pixel in polygon.flatten(order="F"):
        if pixel != value:
            runs.append(count)
            value, count = pixel, 0
        count += 1
    runs.append(count)
    assert np.array_equal(decode_mask({"size": [96, 96], "counts": runs}, 96, 96), polygon)


def test_empty_images_dropped_or_kept(shapes, tmp_path):
    data = json.loads((shapes / "annotations" / "instances_val.json").read_text())
    data["images"].append({"id": 999, "file_name": data["images"][0]["file_name"], "width": 96, "height": 96})
    path = tmp_path / "with_empty.json"
    path.write_text(json.dumps(data))
    assert 999 not in [image["id"] for image in read_coco(path).images]
    kept = read_coco(path, keep_empty=True)
    assert kept.images[-1]["id"] == 999
    _, target = CocoDetection(kept, shapes / "val", with_masks=True)[len(kept.images) - 1]
    assert target["boxes"].shape == (0, 4) and target["masks"].shape == (0, 96, 96)


def test_flip_moves_boxes_with_the_masks(shapes):
    index = read_coco(shapes / "annotations" / "instances_train.json")
    image, target = CocoDetection(index, shapes / "train", with_masks=True)[0]
    flipped_image, flipped = flip_horizontally(image, target)
    assert torch.equal(flipped_image, image.flip(-1))
    for mask, box in zip(flipped["masks"], flipped["boxes"]):
        xs = torch.nonzero(mask, as_tuple=True)[1]
        assert abs(xs.min() - box[0]) <= 1.5 and abs(xs.max() + 1 - box[2]) <= 1.5
    images, targets = collate([(image, target), (flipped_image, flipped)])
    assert len(images) == len(targets) == 2


IMAGE = {"id": 1, "file_name": "a.png", "height": 8, "width": 8}


def test_fields_coco_evaluation_needs_are_filled_in(tmp_path):
    """id, iscrowd and area are optional here; pycocotools' COCOeval reads them."""
    from tunecv.detection.metrics import coco_map

    path = tmp_path / "minimal.json"
    path.write_text(json.dumps({"images": [IMAGE], "annotations": [{"image_id": 1, "category_id": 1,
                                                                    "bbox": [1, 1, 4, 4]}],
                                "categories": [{"id": 1, "name": "a"}]}))
    index = read_coco(path)
    assert index.annotations[1][0] | {"id": 1, "iscrowd": 0, "area": 16.0} == index.annotations[1][0]
    detections = [{"image_id": 1, "category_id": 1, "bbox": [1, 1, 4, 4], "score": 0.9}]
    assert coco_map(index, detections)["bbox_mAP"] == pytest.approx(100.0)


@pytest.mark.parametrize("content, needle", [
    ("not json", "is not JSON"),
    ([1, 2], "holds a JSON list, not a COCO object"),
    ({"images": [], "annotations": []}, "no 'categories' list"),
    ({"images": [IMAGE], "annotations": [{"image_id": 1, "category_id": 1}],
      "categories": [{"id": 1, "name": "a"}]}, "annotations[0] has no 'bbox'"),
    ({"images": [IMAGE], "annotations": [{"image_id": 1, "category_id": 5, "bbox": [0, 0, 2, 2]}],
      "categories": [{"id": 1, "name": "a"}]}, "category_id 5, which is not in categories"),
    ({"images": [{"id": 1, "file_name": "a.png"}], "annotations": [], "categories": [{"id": 1, "name": "a"}]},
     "images[0] has no 'height'"),
    ({"images": [IMAGE], "annotations": [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 2]}],
      "categories": [{"id": 1, "name": "a"}]}, "annotations[0] has bbox [0, 0, 2]; COCO boxes are"),
    ({"images": [IMAGE], "annotations": [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 2, 2],
                                          "segmentation": [[1, 2, 3]]}],
      "categories": [{"id": 1, "name": "a"}]}, "neither polygons"),
])
def test_not_coco_is_one_clear_error(tmp_path, content, needle):
    path = tmp_path / "bad.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(UserError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        read_coco(path)
    with pytest.raises(UserError, match="not found"):
        read_coco(tmp_path / "missing.json")
