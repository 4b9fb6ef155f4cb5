"""Detection (`task: detection`): a COCO-trained torchvision detector with its class head made for this data's
classes, on COCO-format data; MMDetection's fine-tuning (load_from, frozen stages, warm-up and steps), COCO mAP."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler
from torch.utils.data import DataLoader

from tunecv.config import Config
from tunecv.config.schema import DETECTION_METRICS
from tunecv.detection.coco import CocoDetection, HorizontalFlip
from tunecv.detection.data import (
    annotations_fingerprint,
    check_same_classes,
    detection_loader,
    detection_set,
    split_index,
)
from tunecv.detection.engine import detection_loss, evaluate
from tunecv.detection.inference import load_detector, predict_detections, validate_detector, write_detection_table
from tunecv.detection.models import create_detector, detector_spec, load_detector_weights
from tunecv.detection.report import DetectionResults
from tunecv.detection.settings import trainable_layers
from tunecv.errors import UserError
from tunecv.finetune.param_groups import decay_exempt
from tunecv.finetune.phases import Phase, Plan
from tunecv.models.factory import count_params
from tunecv.models.weights import HUB_HOSTS, hub_reachable, read_state_dict, torchvision_state, torchvision_weights_url
from tunecv.resolve import Run
from tunecv.tasks.base import PredictOptions, TrainedModel
from tunecv.train import engine
from tunecv.train.engine import EpochProgress, Trainer
from tunecv.train.feature_memo import FeatureMemo
from tunecv.train.loop import Pipeline
from tunecv.utils.runtime import Compute

logger = logging.getLogger(__name__)

class Detection:
    name = "detection"
    tools: frozenset[str] = frozenset()  # neither --lr_find, --show_batch nor export.py

    def resolve_config(self, cfg: Config) -> Config:
        """The rules that need the detector's spec; detectors run in the standard memory format."""
        spec = detector_spec(cfg.model.model)
        trainable_layers(cfg, spec.backbone_layers)  # checks the range
        if cfg.train.best_metric.startswith("segm") and not spec.masks:
            raise UserError(f"best_metric {cfg.train.best_metric} needs masks; {cfg.model.model} predicts boxes only "
                            "(use bbox_mAP, or a maskrcnn model)")
        return replace(cfg, train=replace(cfg.train, channels_last=False, compile=False))

    def resolve_data(self, cfg: Config) -> tuple[Config, list[str]]:
        """The training annotations' categories (the validation file's must be the same)."""
        data = cfg.data
        train = split_index(cfg, data.train_split, cfg.detection.train_ann_file, training=True)
        if cfg.train.val_while_train:
            check_same_classes(train, split_index(cfg, data.val_split, cfg.detection.val_ann_file, training=False))
        return cfg, list(train.classes)

    def default_metric(self, cfg: Config) -> str:
        return "bbox_mAP"

    def plan_phases(self, cfg: Config, num_classes: int) -> list[Phase]:
        """One phase: what the detector's build freezes (trainable_backbone_layers) stays frozen."""
        with torch.device("meta"):
            model = build_detector(cfg, num_classes)
        frozen = frozenset(name for name, param in model.named_parameters() if not param.requires_grad)
        return [Phase(1, cfg.train.epoch_size, frozen)]

    def resolve_caches(self, cfg: Config, phases: list[Phase], world_size: int) -> tuple[bool, str]:
        return False, "none"

    def create_dataset(self, run: Run, split: str) -> CocoDetection | None:
        training = split == run.cfg.data.train_split
        if not training and not run.cfg.train.val_while_train:
            return None
        given = run.cfg.detection.train_ann_file if training else run.cfg.detection.val_ann_file
        return detection_set(run.cfg, split, given, training)

    def create_transforms(self, run: Run, is_training: bool, compute: Compute) -> Callable | None:
        """The detector resizes and normalises itself; training flips image, boxes and masks together."""
        hflip = run.cfg.data.hflip
        return HorizontalFlip(hflip) if is_training and hflip else None

    def create_loader(self, run: Run, dataset: CocoDetection | None, transform: Callable | None, is_training: bool,
                      compute: Compute) -> DataLoader | None:
        if dataset is None:
            return None
        dataset.transform = transform
        return detection_loader(dataset, run.cfg, is_training, compute.device.type == "cuda")

    def create_model(self, run: Run, compute: Compute) -> tuple[nn.Module, str]:
        """The detector for the data's classes with its configured weights (a resumed run's replace them)."""
        model, weights = build_detector(run.cfg, len(run.classes)), "the resumed run's"
        if run.checkpoint is None:
            weights = load_weights(model, run.cfg)
        return compute.prepare_model(model), weights

    def cache_features(self, run: Run, model: nn.Module, compute: Compute, train_set: CocoDetection,
                       val_set: CocoDetection | None, train_loader: DataLoader, val_loader: DataLoader | None,
                       feature_memo: FeatureMemo | None = None) -> tuple[nn.Module, DataLoader, DataLoader | None]:
        if feature_memo is not None:  # a detector caches no features: a recipe search's kept ones go
            feature_memo.clear()
        return model, train_loader, val_loader

    def param_groups(self, run: Run, model: nn.Module, phase: Phase) -> list[dict[str, Any]]:
        """The parameters that train; norm weights and biases without weight decay unless weight_decay_filter is
        disable."""
        optim = run.cfg.optim
        decay, no_decay = [], []
        for name, param in model.named_parameters():
            if param.requires_grad:
                (no_decay if decay_exempt(name, param, optim.weight_decay_filter) else decay).append(param)
        return [{"params": decay, "weight_decay": optim.weight_decay, "name": "decay"},
                {"params": no_decay, "weight_decay": 0.0, "name": "norm and bias (no decay)"}]

    def create_trainer(self, run: Run, model: nn.Module, compute: Compute, train_set: CocoDetection) -> Trainer:
        train = run.cfg.train
        return Trainer(loss_fn=None, compute=compute, num_classes=len(run.classes),
                       clip_norm=train.clip_value if train.clip_grad else None, scaler=compute.scaler(),
                       log_interval=train.log_interval, freeze_bn=False, batch_loss=detection_loss)

    def train_one_epoch(self, model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer,
                        scheduler: LRScheduler, trainer: Trainer, epoch: int, progress: EpochProgress | None,
                        after_step: Callable) -> EpochProgress:
        return engine.train_one_epoch(model, loader, optimizer, scheduler, trainer, epoch, progress, after_step)

    def evaluate(self, model: nn.Module, loader: DataLoader, trainer: Trainer, desc: str) -> dict[str, Any]:
        dataset = loader.dataset
        iou_types = ("bbox", "segm") if dataset.with_masks else ("bbox",)
        return evaluate(model, loader, trainer.compute, dataset.index, iou_types).metrics

    def row(self, epoch: int, stats: EpochProgress, scores: dict[str, Any] | None, seconds: float) -> dict[str, Any]:
        """Loss (each part too) and COCO mAP, as MMDetection users read them."""
        parts = {name if name.startswith("loss") else f"loss_{name}": value for name, value in stats.parts.items()}
        return {"epoch": epoch, "lr": stats.lr, "train_loss": stats.loss, **parts,
                **{name: (scores or {}).get(name) for name in DETECTION_METRICS},
                "time_s": seconds, "train_images_per_s": stats.images / max(stats.seconds, 1e-9)}

    def fingerprint(self, datasets: list[CocoDetection | None]) -> str:
        return annotations_fingerprint(datasets)

    def checkpoint_meta(self, train_set: CocoDetection) -> dict[str, Any]:
        return {"task": "detection", "category_ids": train_set.index.category_ids}

    def create_results(self, run: Run) -> DetectionResults:
        train = run.cfg.train
        return DetectionResults(run.out_dir, train.best_metric, masks=detector_spec(run.cfg.model.model).masks,
                                csv=train.log_csv, tensorboard=train.log_tensorboard)

    def write_data_reports(self, run: Run, datasets: list[CocoDetection | None]) -> None:
        """Nothing beyond the annotation files' own checks."""

    def describe(self, run: Run, pipeline: Pipeline, plan: Plan) -> str:
        cfg, classes = run.cfg, run.classes
        trainable, total = count_params(pipeline.model)
        val = f"{len(pipeline.val_set)} val images" if pipeline.val_set is not None else "no validation"
        det = cfg.detection
        sizes = str(det.min_size[0]) if len(det.min_size) == 1 else \
            f"one of {', '.join(map(str, det.min_size))} per training image ({det.min_size[-1]} in evaluation)"
        return (f"detection: {cfg.model.model} for {len(classes)} classes ({', '.join(classes[:8])}"
                f"{', ...' if len(classes) > 8 else ''}); weights: {pipeline.weights}\n"
                f"data: {len(pipeline.train_set)} training images ({pipeline.train_set.index.path.name}), {val}; "
                f"images resized by the model to shorter side {sizes}, longer at most {det.max_size}\n"
                f"train: {trainable / 1e6:.2f}M of {total / 1e6:.2f}M parameters, {type(plan.optimizer).__name__} lr "
                f"{cfg.optim.lr:g}, {cfg.sched.scheduler}, {cfg.train.epoch_size} epochs x "
                f"{len(pipeline.train_loader)} steps, batch {cfg.loader.batch_size}; "
                f"{pipeline.trainer.compute.describe()}; best by {cfg.train.best_metric}")

    def prediction_line(self, row: dict[str, Any]) -> str:
        return "\t".join([row["path"], row["class"], f"{row['score']:.4f}", " ".join(map(str, row["box"]))])

    def write_predictions(self, path: str, rows: list[dict[str, Any]]) -> None:
        write_detection_table(path, rows)

    def predict(self, trained: TrainedModel, paths: list[Path], options: PredictOptions
                ) -> tuple[list[dict[str, Any]], list[str]]:
        return predict_detections(trained, paths, options)

    def validate(self, trained: TrainedModel, ckpt_path: str, split: str | None, output: str | None,
                 calibrate: bool, ann_file: str | None) -> list[str]:
        if calibrate:
            raise UserError("--calibrate fits a classifier's temperature; a detector's scores have none to fit")
        return validate_detector(trained, ckpt_path, split, output, ann_file)

    def load_model(self, cfg: Config, classes: list[str], state: dict[str, Any], source: str) -> nn.Module:
        return load_detector(cfg, classes, state, source)


def build_detector(cfg: Config, num_classes: int) -> nn.Module:
    """The detector for `num_classes`, without weights. The backbone's BatchNorm is frozen when weights will be
    loaded (`freeze_bn`), as torchvision does for pretrained backbones; a detector that starts random trains it."""
    name, spec = cfg.model.model, detector_spec(cfg.model.model)
    loads = bool(cfg.model.ckpt_path or cfg.model.pretrained)
    return create_detector(name, num_classes, min_size=cfg.detection.min_size, max_size=cfg.detection.max_size,
                           trainable_backbone_layers=trainable_layers(cfg, spec.backbone_layers),
                           frozen_bn=loads and cfg.finetune.freeze_bn)


def load_weights(model: nn.Module, cfg: Config) -> str:
    """The configured weights into `model`; where they came from, in words."""
    name = cfg.model.model
    if cfg.model.ckpt_path:
        load_detector_weights(model, name, read_state_dict(cfg.model.ckpt_path), source=cfg.model.ckpt_path)
        return f"checkpoint {cfg.model.ckpt_path}"
    if cfg.model.pretrained:
        load_detector_weights(model, name, coco_weights(name), source=f"torchvision COCO {name}")
        return f"torchvision COCO weights ({name})"
    return "random initialisation (pretrained: false)"


def coco_weights(name: str) -> dict[str, torch.Tensor]:
    """torchvision's COCO-trained weights of `name` (torch.hub's cached copy, else a download)."""
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(torchvision_weights_url(name)).name
    host = HUB_HOSTS["torchvision"]
    if not cached.is_file() and not hub_reachable(host):
        raise UserError(f"pretrained COCO weights for {name} need a download and {host} is unreachable; offline, "
                        "set ckpt_path (load_from) to a local torchvision or tunecv checkpoint of the model")
    try:
        return torchvision_state(name)
    except Exception as err:  # network and hub errors come in many types
        raise UserError(f"downloading COCO weights for {name} failed ({str(err).splitlines()[0][:160]}); set "
                        "ckpt_path to a local checkpoint") from None
