"""A `task: detection` run of finetune.py, built from the config: COCO data, a torchvision detector with its
class head made for this data's classes, its weights, the optimizer and schedule; and the run around them with the
classification run's conventions (ckpt_save_dir, config.yaml, run.json, train.log, results.txt, `<model>_best`
and `_last`, resume, torchrun)."""

from __future__ import annotations

import hashlib
import logging
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from tunecv import cli
from tunecv.config import Config, save_config, with_num_classes
from tunecv.data.datasets import check_num_classes
from tunecv.data.loader import create_loader
from tunecv.detection.coco import CocoDetection, CocoIndex, collate, read_coco
from tunecv.detection.fit import DetectionResult, fit_detection
from tunecv.detection.models import create_detector, detector_spec, load_detector_weights
from tunecv.detection.report import DetectionResults
from tunecv.detection.settings import ann_file, best_metric, image_dir, trainable_layers
from tunecv.errors import UserError
from tunecv.finetune.param_groups import decay_exempt
from tunecv.models.factory import count_params
from tunecv.models.weights import HUB_HOSTS, hub_reachable, read_state_dict, torchvision_state, torchvision_weights_url
from tunecv.optim.optimizers import auto_scaled_lr, create_optimizer
from tunecv.optim.schedulers import create_scheduler
from tunecv.report.manifest import write_run_manifest
from tunecv.train import resume
from tunecv.train.checkpoint import CheckpointSaver
from tunecv.train.engine import optimizer_steps
from tunecv.utils import distributed
from tunecv.utils.runtime import Compute, resolve_device, seed_everything

logger = logging.getLogger("tunecv")


@dataclass
class DetectionSetup:
    cfg: Config
    out_dir: Path
    train_set: CocoDetection
    val_set: CocoDetection | None
    train_loader: DataLoader
    val_loader: DataLoader | None
    model: nn.Module
    weights: str
    compute: Compute
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler | None

    @property
    def classes(self) -> list[str]:
        return self.train_set.classes


def detection_set(cfg: Config, split: str, given_ann_file: str | None, training: bool) -> CocoDetection:
    """A split's images and annotations. Validation keeps images without annotations: COCO's mAP counts the
    false detections on them."""
    if not Path(cfg.data.data_dir).is_dir():
        raise UserError(f"data_dir {cfg.data.data_dir} not found; check the path")
    path = ann_file(cfg, split, given_ann_file)
    if not path.is_file():
        key = "train_ann_file" if training else "val_ann_file"
        looked = path if path.is_absolute() else Path(cfg.data.data_dir) / path
        raise UserError(f"annotation file {looked} of split {split} not found; set {key}, or put the COCO json "
                        "there")
    index = read_coco(path, keep_empty=cfg.data.keep_empty_images or not training)
    folder = image_dir(cfg, split)
    if not folder.is_dir():
        raise UserError(f"image folder {folder} not found; the file_names of {index.path.name} are read below "
                        "<image_root or data_dir>/<split>: check image_root, train_split and val_split")
    return CocoDetection(index, folder, with_masks=detector_spec(cfg.model.model).masks,
                         hflip=cfg.data.hflip if training else 0.0)


def check_same_classes(train: CocoIndex, val: CocoIndex) -> None:
    if (train.classes, train.category_ids) != (val.classes, val.category_ids):
        raise UserError(f"{val.path.name} has categories {list(zip(val.category_ids, val.classes))[:5]}, "
                        f"{train.path.name} has {list(zip(train.category_ids, train.classes))[:5]}; both files "
                        "need the same categories list")


def detection_loader(dataset: CocoDetection, cfg: Config, training: bool, pin_memory: bool) -> DataLoader:
    return create_loader(dataset, cfg.loader, is_training=training, seed=cfg.train.seed, pin_memory=pin_memory,
                         rank=distributed.rank(), world_size=distributed.world_size(), collate_fn=collate)


def build_detector(cfg: Config, num_classes: int, load: bool = True) -> tuple[nn.Module, str]:
    """The detector for `num_classes` with its configured weights, and where they came from. The backbone's
    BatchNorm is frozen when weights are loaded (`freeze_bn`), as torchvision does for pretrained backbones;
    a detector that starts random trains it. `load` False: built alike, the weights left out (a resumed run
    replaces them)."""
    name, spec = cfg.model.model, detector_spec(cfg.model.model)
    loads = bool(cfg.model.ckpt_path or cfg.model.pretrained)
    model = create_detector(name, num_classes, min_size=cfg.data.min_size, max_size=cfg.data.max_size,
                            trainable_backbone_layers=trainable_layers(cfg.finetune, spec.backbone_layers),
                            frozen_bn=loads and cfg.finetune.freeze_bn)
    if not load:
        return model, "the resumed run's"
    if cfg.model.ckpt_path:
        load_detector_weights(model, name, read_state_dict(cfg.model.ckpt_path), source=cfg.model.ckpt_path)
        return model, f"checkpoint {cfg.model.ckpt_path}"
    if cfg.model.pretrained:
        load_detector_weights(model, name, coco_weights(name), source=f"torchvision COCO {name}")
        return model, f"torchvision COCO weights ({name})"
    return model, "random initialisation (pretrained: false)"


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


def param_groups(model: nn.Module, weight_decay: float, decay_filter: str) -> list[dict]:
    """The parameters that train; norm weights and biases without weight decay unless `decay_filter` is
    disable."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if decay_exempt(name, param, decay_filter) else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def prepare_detection(cfg: Config, device: torch.device | None = None, load_weights: bool = True) -> DetectionSetup:
    seed_everything(cfg.train.seed)
    device = device or resolve_device(cfg.train.device)
    out_dir = Path(cfg.train.ckpt_save_dir)
    train_set = detection_set(cfg, cfg.data.train_split, cfg.data.train_ann_file, training=True)
    val_set = detection_set(cfg, cfg.data.val_split, cfg.data.val_ann_file, training=False) \
        if cfg.train.val_while_train else None
    if val_set is not None:
        check_same_classes(train_set.index, val_set.index)
    check_num_classes(cfg.model.num_classes, train_set.classes, cfg.data.train_split)
    cfg = with_num_classes(cfg, len(train_set.classes))
    if distributed.is_main():
        cli.add_log_file(out_dir / "train.log")
    cuda = device.type == "cuda"
    compute = Compute.create(device, cfg.train.amp_level, channels_last=False)
    train_loader = detection_loader(train_set, cfg, True, cuda)
    val_loader = detection_loader(val_set, cfg, False, cuda) if val_set is not None else None
    if len(train_loader) == 0:
        raise UserError(f"{len(train_set)} training images give no batch of {cfg.loader.batch_size}; lower "
                        "batch_size")
    model, weights = build_detector(cfg, len(train_set.classes), load_weights)
    model = compute.prepare_model(model)
    lr = auto_scaled_lr(cfg.optim.lr, cfg.optim.auto_scale_lr, cfg.loader.batch_size, 1, distributed.world_size())
    optimizer = create_optimizer(param_groups(model, cfg.optim.weight_decay, cfg.optim.weight_decay_filter),
                                 cfg.optim, lr)
    scheduler = create_scheduler(optimizer, cfg.sched, lr=lr, steps_per_epoch=optimizer_steps(len(train_loader), 1),
                                 epochs=cfg.train.epoch_size)
    cfg = replace(cfg, optim=replace(cfg.optim, lr=lr, auto_scale_lr=None))
    return DetectionSetup(cfg, out_dir, train_set, val_set, train_loader, val_loader, model, weights, compute,
                          optimizer, scheduler, compute.scaler())


def annotations_fingerprint(sets: list[CocoDetection | None]) -> str:
    """A digest of the annotation files' bytes: another file, or an edited one, is other data."""
    digest = hashlib.sha256()
    for dataset in sets:
        if dataset is not None:
            digest.update(dataset.index.path.read_bytes())
    return digest.hexdigest()[:16]


def run_detection(cfg: Config, device: torch.device | None = None, argv: list[str] | None = None
                  ) -> DetectionResult:
    """A whole detection run: a new one, or a stopped one resumed (`resume`)."""
    argv = sys.argv[1:] if argv is None else argv
    resume_path = resume.find_last(cfg.train.resume, cfg.train.ckpt_save_dir, cfg.model.model) \
        if cfg.train.resume else None
    checkpoint = resume.training_checkpoint(resume_path) if resume_path else None
    cfg = resume.with_run_dir(cfg, resume_path)
    setup = prepare_detection(cfg, device, load_weights=checkpoint is None)
    fingerprint = annotations_fingerprint([setup.train_set, setup.val_set])
    if checkpoint is not None:
        resume.check_same_run(setup.cfg, checkpoint, setup.classes, fingerprint)
    cfg = replace(setup.cfg, train=replace(setup.cfg.train, resume=None, resume_force=False, overwrite=False))
    if distributed.is_main():
        save_config(cfg, setup.out_dir)
        write_run_manifest(setup.out_dir, cfg, setup.classes, fingerprint, [sys.argv[0], *argv],
                           world_size=distributed.world_size())
    metric = best_metric(cfg)
    saver = CheckpointSaver(setup.out_dir, cfg.model.model, cfg.to_flat(), setup.classes,
                            keep_max=cfg.train.keep_checkpoint_max, policy=cfg.train.ckpt_save_policy,
                            interval=cfg.train.ckpt_save_interval, save_format=cfg.train.save_format,
                            meta={"data_fingerprint": fingerprint, "task": "detection",
                                  "category_ids": setup.train_set.index.category_ids}, score_key=metric)
    logger.info(_summary(setup, metric))
    results = DetectionResults(setup.out_dir, masks=detector_spec(cfg.model.model).masks, csv=cfg.train.log_csv,
                               tensorboard=cfg.train.log_tensorboard) if distributed.is_main() else None
    return fit_detection(setup, cfg.train, saver, results, metric, checkpoint)


def _sizes(min_size: tuple[int, ...]) -> str:
    if len(min_size) == 1:
        return str(min_size[0])
    return f"one of {', '.join(map(str, min_size))} per training image ({min_size[-1]} in evaluation)"


def _summary(setup: DetectionSetup, metric: str) -> str:
    cfg = setup.cfg
    trainable, total = count_params(setup.model)
    val = f"{len(setup.val_set)} val images" if setup.val_set is not None else "no validation"
    return (f"detection: {cfg.model.model} for {len(setup.classes)} classes ({', '.join(setup.classes[:8])}"
            f"{', ...' if len(setup.classes) > 8 else ''}); weights: {setup.weights}\n"
            f"data: {len(setup.train_set)} training images ({setup.train_set.index.path.name}), {val}; images "
            f"resized by the model to shorter side {_sizes(cfg.data.min_size)}, longer at most {cfg.data.max_size}\n"
            f"train: {trainable / 1e6:.2f}M of {total / 1e6:.2f}M parameters, {type(setup.optimizer).__name__} lr "
            f"{cfg.optim.lr:g}, {cfg.sched.scheduler}, {cfg.train.epoch_size} epochs x {len(setup.train_loader)} "
            f"steps, batch {cfg.loader.batch_size}; {setup.compute.describe()}; best by {metric}")
