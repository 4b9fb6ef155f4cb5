"""The detection training loop: an epoch of steps, COCO mAP on the val set, `<model>_best` by the chosen metric,
`_last` (with the optimizer, scheduler, scaler and random state) at every epoch's end. SIGTERM / Ctrl-C stop after
the current step; the run then resumes at the start of the epoch it was in."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunecv.config import TrainConfig
from tunecv.detection.engine import evaluate, train_one_epoch
from tunecv.detection.report import DetectionResults
from tunecv.errors import UserError
from tunecv.models.weights import load_exact
from tunecv.train.checkpoint import CheckpointSaver
from tunecv.train.loop import check_finite, should_validate
from tunecv.train.resume import GracefulStop, RunStopped, batch_layout, random_state, restore_random_state
from tunecv.utils import distributed

if TYPE_CHECKING:
    from tunecv.detection.run import DetectionSetup

logger = logging.getLogger("tunecv")


@dataclass
class DetectionResult:
    metric: str
    best: float | None
    best_epoch: int
    epochs: int
    out_dir: Path
    best_path: Path
    seconds: float

    def summary(self) -> str:
        best = "-" if self.best is None else f"{self.best:.2f}"
        return (f"best {self.metric} {best} at epoch {self.best_epoch} of {self.epochs} ({self.seconds:.0f} s); "
                f"checkpoint: {self.best_path}\nresults: {self.out_dir / 'results.txt'}")


def _row(epoch: int, stats, metrics: dict[str, float] | None, seconds: float) -> dict[str, Any]:
    parts = {name if name.startswith("loss") else f"loss_{name}": value for name, value in stats.parts.items()}
    row = {"epoch": epoch, "lr": stats.lr, "train_loss": stats.loss, **parts}
    row.update({name: (metrics or {}).get(name) for name in ("bbox_mAP", "bbox_mAP50", "segm_mAP", "segm_mAP50")})
    row.update(time_s=seconds, train_images_per_s=stats.images / max(stats.seconds, 1e-9))
    return row


def _line(row: dict[str, Any]) -> str:
    scores = "  ".join(f"{name} {row[name]:.2f}" for name in ("bbox_mAP", "bbox_mAP50", "segm_mAP")
                       if row.get(name) is not None)
    return (f"epoch {row['epoch']}: loss {row['train_loss']:.4f}  {scores or 'not validated'}  lr {row['lr']:.3g}  "
            f"{row['time_s']:.0f} s ({row['train_images_per_s']:.1f} img/s)")


def fit_detection(setup: DetectionSetup, cfg: TrainConfig, saver: CheckpointSaver, results: DetectionResults | None,
                  metric: str, checkpoint: dict[str, Any] | None = None) -> DetectionResult:
    """Train `setup` for cfg.epoch_size epochs (from `checkpoint`'s, when resuming); returns the best epoch."""
    model, device, start = setup.model, setup.compute.device, time.perf_counter()
    history: list[dict[str, Any]] = []
    best, best_epoch, first_epoch = None, 0, 1
    iou_types = ("bbox", "segm") if setup.train_set.with_masks else ("bbox",)

    def state() -> dict[str, Any]:
        return {"optimizer": setup.optimizer.state_dict(), "scheduler": setup.scheduler.state_dict(),
                "scaler": setup.scaler.state_dict() if setup.scaler is not None else None,
                "history": history,
                "layout": batch_layout(setup.cfg.loader.batch_size, 1), "rng": distributed.gather(random_state()),
                "epoch_progress": None}

    if checkpoint is not None:
        first_epoch, best, best_epoch = _restore(setup, checkpoint, history, saver, results, metric)
    else:  # a stop in the first epoch resumes from here
        initial = state()  # on every process: it gathers their random states
        if distributed.is_main():
            saver.save_last(model, epoch=0, metrics={}, best_top1=None, training_state=initial)
    wrapped = distributed.wrap(model, device)
    signum = 0
    with GracefulStop() as stop:
        def stopping() -> bool:
            nonlocal signum
            signum = distributed.max_all(stop.signum or 0, device)  # a signal any process caught: all stop
            return signum > 0

        for epoch in range(first_epoch, cfg.epoch_size + 1):
            setup.train_loader.sampler.set_epoch(epoch)
            epoch_start = time.perf_counter()
            stats = train_one_epoch(wrapped, setup.train_loader, setup.optimizer, setup.scheduler, setup.compute,
                                    epoch, scaler=setup.scaler, clip_norm=cfg.clip_value if cfg.clip_grad else None,
                                    should_stop=stopping)
            if not stats.finished:
                raise RunStopped(signum, saver.last_path,
                                 f"in epoch {epoch} (a detection run resumes at the start of that epoch)")
            check_finite(model, epoch, setup.scheduler.last_epoch)
            metrics = None
            distributed.sync_buffers(model)  # what `_best` holds is what every process validates
            if setup.val_loader is not None and should_validate(epoch, cfg.epoch_size, cfg):
                metrics = evaluate(model, setup.val_loader, setup.compute, setup.val_set.index, iou_types).metrics
            row = _row(epoch, stats, metrics, time.perf_counter() - epoch_start)
            history.append(row)
            value = row.get(metric)
            improved = (value is not None and (best is None or value > best)) or \
                (setup.val_loader is None and epoch == cfg.epoch_size)
            if improved:
                best, best_epoch = value, epoch
            training_state = state()
            if distributed.is_main():
                saver.save(model, epoch=epoch, metrics=row, is_best=improved, best_top1=best,
                           training_state=training_state)
                results.add(row)
            logger.info(_line(row))
            if stopping() and epoch < cfg.epoch_size:
                raise RunStopped(signum, saver.last_path, f"after epoch {epoch}")
    if results is not None:
        results.finish(metric, best, best_epoch)
    return DetectionResult(metric, best, best_epoch, cfg.epoch_size, setup.out_dir, saver.best_path,
                           time.perf_counter() - start)


def _restore(setup: DetectionSetup, checkpoint: dict[str, Any], history: list[dict[str, Any]],
             saver: CheckpointSaver, results: DetectionResults | None, metric: str) -> tuple[int, float | None, int]:
    """Put a stopped run back: weights, optimizer, scheduler, scaler, random state, the rows reported, the
    per-epoch files kept. Returns (the first epoch to train, the best value of `metric` so far, its epoch)."""
    load_exact(setup.model, checkpoint["model"], source="the resumed checkpoint")
    try:
        setup.optimizer.load_state_dict(checkpoint["optimizer"])
    except ValueError:  # torch: "loaded state dict contains a parameter group that doesn't match ..."
        raise UserError("the resumed run trained other parameters (frozen_stages, trainable_backbone_layers, "
                        "freeze_bn or weight_decay_filter changed); resume with the run's own values, or start a "
                        "new run with --load_from <its _last.pth>") from None
    setup.scheduler.load_state_dict(checkpoint["scheduler"])
    if setup.scaler is not None and checkpoint.get("scaler"):
        setup.scaler.load_state_dict(checkpoint["scaler"])
    states = checkpoint["rng"]
    restore_random_state(states[distributed.rank() % len(states)])
    saver.kept = [(score, epoch, Path(path)) for score, epoch, path in checkpoint.get("kept", [])]
    for row in checkpoint["history"]:
        history.append(row)
        if results is not None:
            results.add(row, replayed=True)
    # the best so far, by this run's metric (best_metric may have changed since)
    scored = [row for row in history if row.get(metric) is not None]
    best_row = max(scored, key=lambda row: row[metric], default=None)
    epoch = checkpoint["epoch"]
    logger.info("resumed at the start of epoch %d", epoch + 1)
    return epoch + 1, best_row[metric] if best_row else None, best_row["epoch"] if best_row else 0
