"""COCO metrics: the ground truth as detections scores 100 bbox and segm mAP, shifted boxes score less, no
detections score 0; results carry the file's own category ids."""

from __future__ import annotations

import pytest
import torch

from tools.make_shapes import make_shapes
from tunecv.detection.coco import CocoDetection, read_coco
from tunecv.detection.metrics import coco_detections, coco_map


@pytest.fixture(scope="module")
def val(tmp_path_factory) -> tuple[CocoDetection, list]:
    root = tmp_path_factory.mktemp("shapes")
    make_shapes(root, ["circle", "square", "triangle"], train=1, val=6, size=96, seed=2)
    dataset = CocoDetection(read_coco(root / "annotations" / "instances_val.json"), root / "val", with_masks=True)
    return dataset, [dataset[i][1] for i in range(len(dataset))]


def _as_outputs(targets: list[dict], shift: float = 0.0) -> list[dict]:
    return [{"boxes": t["boxes"] + shift, "labels": t["labels"], "scores": torch.ones(len(t["labels"])),
             "masks": t["masks"][:, None].float()} for t in targets]


def test_ground_truth_scores_100(val):
    dataset, targets = val
    ids = [int(t["image_id"]) for t in targets]
    detections = coco_detections(_as_outputs(targets), ids, dataset.index)
    assert {d["category_id"] for d in detections} <= {11, 21, 31}
    metrics = coco_map(dataset.index, detections, ("bbox", "segm"))
    assert metrics["bbox_mAP"] == pytest.approx(100.0, abs=0.5) and metrics["bbox_mAP50"] == pytest.approx(100.0)
    assert metrics["segm_mAP"] == pytest.approx(100.0, abs=0.5)


def test_worse_boxes_score_less_and_nothing_scores_zero(val):
    dataset, targets = val
    ids = [int(t["image_id"]) for t in targets]
    shifted = coco_map(dataset.index, coco_detections(_as_outputs(targets, shift=6.0), ids, dataset.index))
    assert 0 < shifted["bbox_mAP"] < 90 and shifted["bbox_mAP50"] > shifted["bbox_mAP"]
    assert coco_map(dataset.index, []) == {"bbox_mAP": 0.0, "bbox_mAP50": 0.0}
