"""validate.py on a classifier: loss, top-1 (top-5 past 5 classes), calibration (ECE, and the temperature
--calibrate fits), per-class accuracy and pred.txt; report.txt, confusion_matrix.png, top_losses.png and
reliability.png beside it."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import torch

from tunecv.data.loader import create_loader
from tunecv.data.prefetch import on_device
from tunecv.inference.predict import split_dataset
from tunecv.report.calibration import TEMPERATURE_RANGE, calibrated_top1, fit_temperature, nll, reliability_bins
from tunecv.report.manifest import class_changes
from tunecv.report.plots import plot_confusion, plot_reliability, plot_top_losses
from tunecv.report.results import (
    format_per_class,
    most_confidently_wrong,
    per_class_accuracy,
    reported_topk,
    write_class_report,
    write_predictions,
)
from tunecv.tasks.base import TrainedModel
from tunecv.train.checkpoint import update_checkpoint
from tunecv.train.engine import EvalResult, evaluate

logger = logging.getLogger(__name__)


def validate_classifier(trained: TrainedModel, ckpt_path: str, split: str | None, output: str | None,
                        calibrate: bool) -> list[str]:
    """Evaluate and write the reports; the lines validate.py prints."""
    result, written = evaluate_classifier(trained, ckpt_path, split, output, calibrate)
    topk = reported_topk(len(trained.classes))
    return [f"{result.images} images: loss {result.loss:.4f}  top1 {result.top1:.2f}  "
            + (f"top{topk} {result.top5:.2f}  " if topk else "")
            + f"ECE {_reliability(result).ece:.2f} %  ({result.images / max(result.seconds, 1e-9):.0f} img/s)",
            format_per_class(per_class_accuracy(result, trained.classes)),
            f"predictions: {written[0]}", f"report: {', '.join(map(str, written[1:]))}"]


def evaluate_classifier(trained: TrainedModel, ckpt_path: str, split: str | None, output: str | None,
                        calibrate: bool = False) -> tuple[EvalResult, list[Path]]:
    """Evaluate; write pred.txt (or `output`) and, beside it, report.txt and the pictures; return their paths.
    `calibrate`: fit the temperature on this split and store it in the checkpoint (scores and loss then use it)."""
    cfg, classes, compute = trained.cfg, trained.classes, trained.compute
    split = split or cfg.data.val_split
    uint8 = compute.device.type == "cuda"  # the GPU normalises (DevicePrefetcher)
    dataset = split_dataset(trained, split, uint8)
    _warn_absent_classes(classes, dataset.targets, split)
    loader = on_device(create_loader(dataset, cfg.loader, is_training=False, pin_memory=uint8), compute, cfg.data,
                       is_training=False)
    result = evaluate(trained.model, loader, compute, len(classes), desc=split, temperature=trained.temperature,
                      keep_logits=True)
    target = Path(output) if output else Path(ckpt_path).parent / "pred.txt"
    curves = {f"temperature {trained.temperature:.2f}": _reliability(result)}
    if calibrate and _can_calibrate(result, split):
        calibrated = _calibrate(result, trained.temperature, ckpt_path, split)
        if calibrated is not None:
            result = calibrated
            curves[f"temperature {result.temperature:.2f} (fitted)"] = _reliability(result)
    write_predictions(target, [dataset.samples[i][0] for i in result.indices], result, classes)
    return result, [target, *_pictures(result, classes, dataset, target.parent),
                    plot_reliability(curves, target.parent / "reliability.png")]


def _reliability(result: EvalResult):
    return reliability_bins(result.scores, [p == t for p, t in zip(result.predictions, result.targets)])


def _can_calibrate(result: EvalResult, split: str) -> bool:
    if not result.images:
        logger.warning("--calibrate: %s has no images to fit a temperature on; the checkpoint is unchanged", split)
        return False
    if all(p == t for p, t in zip(result.predictions, result.targets)):
        logger.warning("--calibrate: every %s image is right, so no temperature fits (sharper is always better); "
                       "calibrate on a larger split with some errors; the checkpoint is unchanged", split)
        return False
    return True


def _calibrate(result: EvalResult, old: float, ckpt_path: str, split: str) -> EvalResult | None:
    """Temperature scaling fitted on `result`'s logits, stored in the checkpoint; the result rescored with it
    (None, the checkpoint unchanged, when the fit fails)."""
    targets = torch.tensor(result.targets)
    temperature = fit_temperature(result.logits, targets)
    if temperature is None:
        logger.warning("--calibrate: the temperature fit diverged on %s; the checkpoint is unchanged", split)
        return None
    if temperature in TEMPERATURE_RANGE:
        logger.warning("--calibrate: the temperature stopped at its bound %g; the logits are far from calibrated "
                       "or %s is too small", temperature, split)
    update_checkpoint(ckpt_path, {"temperature": temperature})
    before = (nll(result.logits, targets, old), _reliability(result).ece)
    scores, _ = calibrated_top1(result.logits, temperature)
    result = replace(result, scores=scores, loss=nll(result.logits, targets, temperature), temperature=temperature)
    after_ece = _reliability(result).ece
    logger.info("calibration: temperature %.3f -> %.3f fitted on %s (%d images): NLL %.4f -> %.4f, ECE %.2f %% -> "
                "%.2f %%; stored in %s (predict.py and validate.py use it). Judge it on images it was not fitted on.",
                old, temperature, split, result.images, before[0], result.loss, before[1], after_ece, ckpt_path)
    if after_ece > before[1]:  # the fit lowers the NLL; a binned ECE that rises says the split is too small for it
        logger.warning("--calibrate: ECE rose although the likelihood improved: %d images are few for a reliable "
                       "temperature; calibrate on a larger split", result.images)
    return result


def _pictures(result: EvalResult, classes: list[str], dataset, folder: Path) -> list[Path]:
    """report.txt, confusion_matrix.png and top_losses.png beside pred.txt."""
    matrix = write_class_report(folder / "report.txt", result, classes)
    wrong = most_confidently_wrong(result)
    images = [dataset.load_image(index) for index, _, _, _ in wrong]
    for image in images:
        image.thumbnail((224, 224))
    titles = [f"{classes[true]} / {classes[pred]} {score:.2f}" for _, true, pred, score in wrong]
    return [folder / "report.txt", plot_confusion(matrix, classes, folder / "confusion_matrix.png"),
            plot_top_losses(images, titles, folder / "top_losses.png")]


def _warn_absent_classes(classes: list[str], targets: list[int], split: str) -> None:
    # data classes the checkpoint does not know are an error (create_dataset); checkpoint classes without
    # images are not, but top-1 and the per-class table then say nothing about them
    _, absent = class_changes(classes, [classes[label] for label in sorted(set(targets))])
    if absent:
        logger.warning("%s has images of %d of the checkpoint's %d classes, none of %d (e.g. %s); its top-1 "
                       "covers the %d others only", split, len(classes) - len(absent), len(classes), len(absent),
                       absent[0], len(classes) - len(absent))
