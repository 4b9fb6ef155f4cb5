"""A preview of training: the first batch as the model gets it (augmented, mixed), drawn to batch.png, so users
can check their augmentation before a long run (`finetune.py --show_batch`)."""

from __future__ import annotations

from pathlib import Path

from tunecv.config import Config
from tunecv.data.datasets import create_dataset
from tunecv.data.loader import create_loader, create_mixup
from tunecv.data.transforms import create_transforms, draft_size
from tunecv.errors import UserError
from tunecv.report.plots import plot_batch
from tunecv.utils.runtime import image_mode, seed_everything


def write_batch_preview(cfg: Config, count: int = 16) -> Path:
    """batch.png in the run folder: the first `count` images of the first training batch as the model gets them
    (augmented, mixed when mixup/cutmix is on), de-normalised, each with its label. `cfg`: resolved
    (`tunecv.resolve`)."""
    seed_everything(cfg.train.seed)
    train_set = create_dataset(cfg.data, cfg.data.train_split, create_transforms(cfg.data, True),
                               image_mode=image_mode(cfg.model.in_channels), draft_size=draft_size(cfg.data, True))
    loader = create_loader(train_set, cfg.loader, is_training=True, seed=cfg.train.seed, persistent=False)
    batch = next((batch for batch in loader if batch is not None), None)
    if batch is None:
        raise UserError(f"{len(train_set)} training images give no batch of {cfg.loader.batch_size}; lower "
                        "batch_size or set drop_remainder false")
    images, labels = batch[:2]
    mixup = create_mixup(cfg.loader, len(train_set.classes), cfg.train.label_smoothing)
    if mixup is not None:
        images, mixed = mixup(images, labels)
        weights, top = mixed.topk(min(2, len(train_set.classes)), dim=1)
        titles = [" + ".join(f"{train_set.classes[c]} {w:.2f}" for w, c in zip(ws.tolist(), cs.tolist()) if w >= 0.05)
                  for ws, cs in zip(weights, top)]
    else:
        titles = [train_set.classes[label] for label in labels.tolist()]
    return plot_batch(images[:count], titles[:count], cfg.data.mean, cfg.data.std,
                      Path(cfg.train.ckpt_save_dir) / "batch.png")
