"""COCO metrics: detections in COCO's result format (original category ids, xywh boxes, RLE masks) and
pycocotools' COCOeval over them: bbox and segm mAP (IoU 0.50:0.95) and mAP50, in percent."""

from __future__ import annotations

import contextlib
import copy
import io
import logging

import numpy as np
import torch

from tunecv.detection.coco import CocoIndex

logger = logging.getLogger(__name__)

MASK_THRESHOLD = 0.5  # Mask R-CNN's soft masks → binary, as torchvision's references and MMDetection do


def coco_detections(outputs: list[dict[str, torch.Tensor]], image_ids: list[int], index: CocoIndex) -> list[dict]:
    """A model's outputs (boxes x1y1x2y2, labels 1..K, scores, masks (N, 1, H, W) for Mask R-CNN) as COCO
    results: the json `validate.py` writes and COCOeval reads."""
    from pycocotools import mask as coco_mask

    results = []
    for output, image_id in zip(outputs, image_ids):
        boxes = output["boxes"].detach().float().cpu()
        xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1).tolist()
        labels, scores = output["labels"].tolist(), output["scores"].tolist()
        masks = output.get("masks")
        binary = (masks[:, 0] > MASK_THRESHOLD).cpu().numpy().astype(np.uint8) if masks is not None else None
        for i, (box, label, score) in enumerate(zip(xywh, labels, scores)):
            result = {"image_id": int(image_id), "category_id": index.category_ids[label - 1],
                      "bbox": [round(v, 2) for v in box], "score": round(float(score), 5)}
            if binary is not None:
                rle = coco_mask.encode(np.asfortranarray(binary[i]))
                rle["counts"] = rle["counts"].decode("ascii")  # json-serialisable
                result["segmentation"] = rle
            results.append(result)
    return results


def _evaluations(index: CocoIndex, detections: list[dict], iou_types: tuple[str, ...]):
    """pycocotools' COCOeval of each IoU type, accumulated and summarised (its printing sent to the debug log)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    chatter = io.StringIO()  # pycocotools prints its progress and tables: the debug log, not the console
    evaluations = {}
    with contextlib.redirect_stdout(chatter):
        truth = COCO()  # from the checked annotations, with the fields COCOeval needs filled in
        truth.dataset = index.ground_truth()
        truth.createIndex()
        found = truth.loadRes(copy.deepcopy(detections))  # loadRes adds fields to the dicts it is given
        for kind in iou_types:
            evaluation = COCOeval(truth, found, kind)
            evaluation.params.imgIds = [image["id"] for image in index.images]
            evaluation.evaluate()
            evaluation.accumulate()
            evaluation.summarize()
            evaluations[kind] = evaluation
    logger.debug("COCOeval:\n%s", chatter.getvalue())
    return evaluations


def coco_scores(index: CocoIndex, detections: list[dict], iou_types: tuple[str, ...] = ("bbox",)
                ) -> tuple[dict[str, float], list[tuple[str, float | None]]]:
    """({`<type>_mAP`, `<type>_mAP50`} for each of `iou_types` ("bbox", "segm"), each class's bbox AP) over the
    images of `index`, in percent; 0 when there is no detection at all. The per-class AP is MMDetection's
    classwise table: IoU 0.50:0.95, all areas, 100 detections; None for a class without ground truth."""
    metrics = {f"{kind}_{name}": 0.0 for kind in iou_types for name in ("mAP", "mAP50")}
    if not detections:
        return metrics, [(name, 0.0) for name in index.classes]
    evaluations = _evaluations(index, detections, iou_types)
    for kind, evaluation in evaluations.items():
        # stats[0]: AP at IoU 0.50:0.95, stats[1]: AP at 0.50; -1 where nothing could be scored
        metrics[f"{kind}_mAP"] = max(0.0, float(evaluation.stats[0])) * 100
        metrics[f"{kind}_mAP50"] = max(0.0, float(evaluation.stats[1])) * 100
    # precision: [IoU threshold, recall point, category, area range, max detections]; -1 where undefined
    precision = evaluations["bbox"].eval["precision"]
    per_class = []
    for k, name in enumerate(index.classes):
        values = precision[:, :, k, 0, -1]
        values = values[values > -1]
        per_class.append((name, float(values.mean()) * 100 if values.size else None))
    return metrics, per_class


def coco_map(index: CocoIndex, detections: list[dict], iou_types: tuple[str, ...] = ("bbox",)) -> dict[str, float]:
    """The mAPs of `coco_scores`."""
    return coco_scores(index, detections, iou_types)[0]
