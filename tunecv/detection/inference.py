"""A trained detector at work: validate.py's COCO evaluation of a split (with the detections written as COCO
results json) and predict.py's detections on any images, drawn into PNGs."""

from __future__ import annotations

import csv
import io
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms.functional import pil_to_tensor

from tunecv.config import Config
from tunecv.data.loader import num_workers
from tunecv.detection.coco import collate
from tunecv.detection.data import detection_loader, detection_set
from tunecv.detection.draw import draw_detections
from tunecv.detection.engine import evaluate
from tunecv.detection.metrics import MASK_THRESHOLD
from tunecv.detection.models import create_detector, detector_spec, load_detector_weights
from tunecv.errors import UserError
from tunecv.tasks.base import PredictOptions
from tunecv.utils.fileio import atomic_write_text
from tunecv.utils.progress import progress_bar
from tunecv.utils.runtime import Compute

logger = logging.getLogger(__name__)


def load_detector(cfg: Config, classes: list[str], state: dict[str, torch.Tensor], source: str) -> nn.Module:
    """The checkpoint's detector, its backbone BatchNorm frozen (the same as eval mode)."""
    model = create_detector(cfg.model.model, len(classes), min_size=cfg.detection.min_size,
                            max_size=cfg.detection.max_size)
    replaced = load_detector_weights(model, cfg.model.model, state, source)
    if replaced:  # only a class count other than the checkpoint's own classes does this
        raise UserError(f"{source}: its class head does not fit its {len(classes)} classes; the file is damaged")
    return model.eval()


@dataclass
class DetectionEvaluation:
    metrics: dict[str, float]
    per_class: list[tuple[str, float]]  # bbox AP (IoU 0.50:0.95) of each class, in percent
    images: int
    seconds: float
    detections: Path


def validate_detector(trained, ckpt_path: str, split: str | None, output: str | None,
                      ann_file: str | None) -> list[str]:
    """validate.py on a detector: COCO mAP of a split, per-class AP, the detections written as COCO results json;
    the lines to print. The split's annotation file: `ann_file` (--val_ann_file), else the config's for the train
    or val split, else annotations/instances_<split>.json."""
    data, det = trained.cfg.data, trained.cfg.detection
    split = split or data.val_split
    given = ann_file or {data.val_split: det.val_ann_file, data.train_split: det.train_ann_file}.get(split)
    evaluation = evaluate_split(trained, split, given, output, ckpt_path)
    scores = "  ".join(f"{name} {value:.2f}" for name, value in evaluation.metrics.items())
    width = max(len(name) for name, _ in evaluation.per_class)
    return [f"{evaluation.images} images: {scores}  ({evaluation.images / max(evaluation.seconds, 1e-9):.1f} img/s)",
            "\n".join([f"{'class':<{width}}  bbox AP"] + [f"{name:<{width}}  {'-' if ap is None else f'{ap:6.2f}'}"
                                                         for name, ap in evaluation.per_class]),
            f"detections: {evaluation.detections}"]


def evaluate_split(trained, split: str, given_ann_file: str | None, output: str | None,
                   ckpt_path: str) -> DetectionEvaluation:
    """COCO mAP of the checkpoint on a split; its detections as COCO results json (`output`, default
    detections.json beside the checkpoint)."""
    cfg = trained.cfg
    dataset = detection_set(cfg, split, given_ann_file, training=False)
    found = list(zip(dataset.index.category_ids, dataset.classes))
    expected = list(zip(trained.category_ids or dataset.index.category_ids, trained.classes))
    if found != expected:
        raise UserError(f"{dataset.index.path} has categories {found[:5]}, the checkpoint {expected[:5]} (id, name); "
                        "evaluate on annotations with the checkpoint's categories")
    loader = detection_loader(dataset, cfg, False, trained.compute.device.type == "cuda")
    iou_types = ("bbox", "segm") if detector_spec(cfg.model.model).masks else ("bbox",)
    start = time.perf_counter()
    scores = evaluate(trained.model, loader, trained.compute, dataset.index, iou_types)
    seconds = time.perf_counter() - start
    target = Path(output) if output else Path(ckpt_path).parent / "detections.json"
    atomic_write_text(target, json.dumps(scores.detections) + "\n")
    return DetectionEvaluation(scores.metrics, scores.per_class, len(dataset), seconds, target)


class ImageFiles(Dataset):
    """Image files as detector inputs (float RGB in [0, 1]); a file that does not decode gives None."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int] | None:
        try:
            with Image.open(self.paths[i]) as raw:
                return pil_to_tensor(raw.convert("RGB")).float().div_(255), i
        except OSError:
            return None


def _collate(batch: list) -> tuple[list[torch.Tensor], list[int]] | None:
    kept = [item for item in batch if item is not None]
    return collate(kept) if kept else None


@torch.inference_mode()
def detect(model: nn.Module, paths: list[Path], compute: Compute, batch_size: int, workers: int,
           threshold: float) -> Iterator[tuple[int, dict[str, torch.Tensor]]]:
    """(index in `paths`, its detections scoring at least `threshold`) for each image that decodes, on the CPU,
    one batch at a time (full-size masks of a folder would not fit in memory); masks as booleans (N, H, W)."""
    loader = DataLoader(ImageFiles(paths), batch_size=batch_size, num_workers=workers, collate_fn=_collate)
    for batch in progress_bar(loader, desc="predict"):
        if batch is None:
            continue
        images, indices = batch
        with compute.autocast():
            outputs = model([image.to(compute.device) for image in images])
        for i, output in zip(indices, outputs):
            kept = {k: v[output["scores"] >= threshold] for k, v in output.items()}
            if "masks" in kept:
                kept["masks"] = kept["masks"][:, 0] > MASK_THRESHOLD
            # fp32: AMP's half-precision boxes are coarse
            yield i, {k: v.float().cpu() if v.is_floating_point() else v.cpu() for k, v in kept.items()}


def detection_rows(path: Path, output: dict[str, torch.Tensor], classes: list[str]) -> list[dict[str, Any]]:
    """One row per detection of an image: path, class, score, box (x1, y1, x2, y2)."""
    return [{"path": str(path), "class": classes[label - 1], "score": round(score, 4),
             "box": [round(v, 1) for v in box]}
            for box, label, score in zip(output["boxes"].tolist(), output["labels"].tolist(),
                                         output["scores"].tolist())]


def predict_and_draw(model: nn.Module, paths: list[Path], compute: Compute, batch_size: int, workers: int,
                     threshold: float, classes: list[str], draw_dir: Path) -> tuple[list[dict[str, Any]], set[int]]:
    """predict.py on a detector: the rows of every detection scoring at least `threshold`, each decodable image
    drawn with them as `<draw_dir>/<image stem>.png`; and the indices of the images that decoded."""
    draw_dir.mkdir(parents=True, exist_ok=True)
    rows, decoded, used = [], set(), set()
    for i, output in detect(model, paths, compute, batch_size, workers, threshold):
        decoded.add(i)
        rows += detection_rows(paths[i], output, classes)
        name = paths[i].stem
        while name in used:  # images of the same name in different folders
            name += "_"
        used.add(name)
        with Image.open(paths[i]) as raw:
            draw_detections(raw.convert("RGB"), output, classes, draw_dir / f"{name}.png")
    return rows, decoded


def write_detection_table(path: str | Path, rows: list[dict[str, Any]]) -> None:
    """predict.py's detections as .json (a list of rows), or .csv with path, class, score, x1, y1, x2, y2."""
    if str(path).endswith(".json"):
        atomic_write_text(path, json.dumps(rows, indent=1) + "\n")
        return
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["path", "class", "score", "x1", "y1", "x2", "y2"])
    writer.writerows([row["path"], row["class"], row["score"], *row["box"]] for row in rows)
    atomic_write_text(path, out.getvalue())


def predict_detections(trained, paths: list[Path], options: PredictOptions) -> tuple[list[dict], list[str]]:
    """predict.py on a detector: (one row per detection above the score threshold, the paths that did not
    decode); each decodable image drawn with its detections into the draw folder."""
    if options.tta:
        raise UserError("--tta averages a classifier's probabilities; detectors have no such option here")
    cfg, start = trained.cfg, time.perf_counter()
    rows, decoded = predict_and_draw(trained.model, paths, trained.compute, cfg.loader.batch_size,
                                     num_workers(cfg.loader.num_parallel_workers), options.score_threshold,
                                     trained.classes, options.draw_dir)
    seconds = time.perf_counter() - start
    logger.info("%d images in %.1f s (%.1f img/s, decoding and drawing included); drawn with their detections "
                "(score >= %g) in %s", len(decoded), seconds, len(decoded) / max(seconds, 1e-9),
                options.score_threshold, options.draw_dir)
    return rows, [str(path) for i, path in enumerate(paths) if i not in decoded]
