"""A classifier at work: `collect_images` and `predict` run a checkpoint's model (`tunecv.inference.trained`) on any
image files; `split_dataset` reads a split of its data."""

from __future__ import annotations

import glob
import logging
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from tunecv.data import create_dataset, create_loader, create_transforms, draft_size
from tunecv.data.datasets import IMAGE_EXTENSIONS, ImageDataset
from tunecv.data.prefetch import on_device
from tunecv.errors import UserError
from tunecv.tasks.base import PredictOptions, TrainedModel
from tunecv.utils.progress import progress_bar
from tunecv.utils.runtime import Compute, image_mode

logger = logging.getLogger(__name__)


def split_dataset(trained: TrainedModel, split: str, uint8: bool = False) -> ImageDataset:
    """A split of the checkpoint's data (or the overridden data_dir) with its evaluation transform and classes.
    `uint8`: tensors the GPU normalises (DevicePrefetcher). The training run's scan cache, where it still is, spares
    decoding every image again (read only: validating writes nothing in the run folder)."""
    cfg = trained.cfg
    run_dir = cfg.train.ckpt_save_dir
    return create_dataset(cfg.data, split, create_transforms(cfg.data, is_training=False, uint8=uint8),
                          classes=trained.classes, image_mode=image_mode(cfg.model.in_channels),
                          scan_cache=Path(run_dir) / "scan_cache.json" if run_dir else None,
                          draft_size=draft_size(cfg.data, False))


def files_dataset(trained: TrainedModel, paths: list[Path], uint8: bool = False) -> ImageDataset:
    """Any image files with the checkpoint's evaluation transform (label 0: unknown); a file that does not decode
    is skipped (its item is None)."""
    cfg = trained.cfg
    return ImageDataset([(str(p), 0) for p in paths], trained.classes,
                        create_transforms(cfg.data, is_training=False, uint8=uint8),
                        image_mode=image_mode(cfg.model.in_channels), skip_unreadable=True,
                        draft_size=draft_size(cfg.data, False))


def collect_images(inputs: list[str]) -> list[Path]:
    """Image files from files, folders (recursively, by extension) and glob patterns, in the given order, each
    once. A path or pattern that names nothing is an error."""
    found: dict[Path, None] = {}
    for item in inputs:
        matches = [Path(m) for m in sorted(glob.glob(item, recursive=True))] if glob.has_magic(item) else [Path(item)]
        if not matches or not matches[0].exists():
            raise UserError(f"{item}: no such file, folder or matching image; check the path")
        for path in matches:
            if path.is_dir():
                found.update(dict.fromkeys(sorted(p for p in path.rglob("*") if p.is_file()
                                                  and p.suffix.lower() in IMAGE_EXTENSIONS)))
            elif path.is_file():
                found[path] = None
    if not found:
        raise UserError(f"no image files in {' '.join(inputs)} (folders are searched for .jpg, .png and the other "
                        "image extensions); give image files, folders or patterns")
    return list(found)


@torch.inference_mode()
def predict(model: nn.Module, loader: DataLoader, compute: Compute, tta: bool = False,
            temperature: float = 1.0) -> dict[int, torch.Tensor]:
    """Class probabilities, softmax(logits / temperature), per dataset index (images that fail to decode have
    none); `tta`: the average with the horizontally flipped image's."""
    model.eval()
    probabilities: dict[int, torch.Tensor] = {}
    for batch in progress_bar(loader, desc="predict"):
        if batch is None:
            continue
        inputs = compute.inputs(batch[0])
        with compute.autocast():
            probs = (model(inputs).float() / temperature).softmax(dim=1)
            if tta:
                probs = (probs + (model(inputs.flip(-1)).float() / temperature).softmax(dim=1)) / 2
        probabilities.update(zip(batch[2].tolist(), probs.cpu()))
    return probabilities


def check_some_read(paths: list[Path], bad: list[str]) -> None:
    """Not one of the files decoded: an error, not an empty prediction (some unreadable ones are warned and
    skipped)."""
    if not paths or len(bad) < len(paths):
        return
    if len(bad) == 1:
        raise UserError(f"{bad[0]} could not be read as an image; give image files (e.g. .jpg, .png)")
    raise UserError(f"none of the {len(bad)} files could be read as an image (e.g. {bad[0]}); give image files "
                    "(e.g. .jpg, .png)")


def top_k(probs: torch.Tensor, classes: list[str], k: int) -> list[tuple[str, float]]:
    values, indices = probs.topk(min(k, len(classes)))
    return [(classes[i], round(float(v), 6)) for v, i in zip(values, indices.tolist())]


def predict_classes(trained: TrainedModel, paths: list[Path], options: PredictOptions) -> tuple[list[dict], list[str]]:
    """predict.py on a classifier: (one row per image that decoded: path and top-k, the paths that did not)."""
    cfg, compute = trained.cfg, trained.compute
    uint8 = compute.device.type == "cuda"  # the GPU normalises (DevicePrefetcher)
    dataset = files_dataset(trained, paths, uint8)
    loader = on_device(create_loader(dataset, cfg.loader, is_training=False, pin_memory=uint8), compute, cfg.data,
                       is_training=False)
    if trained.temperature != 1.0:
        logger.info("probabilities calibrated with temperature %.3f (validate.py --calibrate)", trained.temperature)
    start = time.perf_counter()
    probabilities = predict(trained.model, loader, compute, tta=options.tta, temperature=trained.temperature)
    seconds = time.perf_counter() - start
    logger.info("%d images in %.1f s (%.0f img/s, decoding included%s)", len(probabilities), seconds,
                len(probabilities) / max(seconds, 1e-9), ", x2 for --tta" if options.tta else "")
    rows = [{"path": str(path), "top": top_k(probabilities[i], trained.classes, options.topk)}
            for i, path in enumerate(paths) if i in probabilities]
    return rows, [str(path) for i, path in enumerate(paths) if i not in probabilities]
