"""Classification: an ImageNet-pretrained timm / torchvision classifier with a new head, on images in any of the
data layouts; the fine-tuning strategies, the image and feature caches, top-1 results."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler
from torch.utils.data import DataLoader, Dataset

from tunecv.config import Config
from tunecv.data.audit import audit, write_report
from tunecv.data.bad_images import write_bad_images
from tunecv.data.datasets import check_split, create_dataset, dataset_classes, resolve_layout
from tunecv.data.image_cache import attach_image_cache
from tunecv.data.loader import class_counts, create_loader, create_mixup
from tunecv.data.prefetch import on_device
from tunecv.data.scan import write_scan_cache
from tunecv.data.transforms import check_auto_augment, create_transforms, draft_size
from tunecv.finetune.param_groups import build_param_groups
from tunecv.finetune.phases import Phase, Plan, apply_phase, plan_phases
from tunecv.finetune.strategies import is_gradual
from tunecv.inference.predict import predict_classes
from tunecv.inference.validate import validate_classifier
from tunecv.models.factory import check_runs_at, create_model
from tunecv.models.layer_map import layer_map
from tunecv.models.names import check_model_options, input_settings
from tunecv.models.weights import load_exact, load_initial_weights
from tunecv.report.manifest import data_fingerprint
from tunecv.report.results import ResultsWriter, reported_topk, write_table
from tunecv.report.summary import phase_lines, run_summary
from tunecv.resolve import Run
from tunecv.tasks.base import PredictOptions, TrainedModel
from tunecv.train import engine
from tunecv.train.engine import EpochProgress, Trainer, optimizer_steps
from tunecv.train.feature_cache import create_feature_loaders, use_feature_cache
from tunecv.train.feature_memo import FeatureMemo
from tunecv.train.loop import Pipeline
from tunecv.utils import distributed
from tunecv.utils.runtime import Compute, image_mode

logger = logging.getLogger(__name__)


class Classification:
    name = "classification"
    tools = frozenset({"lr_find", "show_batch", "export"})

    def resolve_config(self, cfg: Config) -> Config:
        """The model's input settings where not given (no data is read)."""
        if cfg.data.auto_augment:
            check_auto_augment(cfg.data.auto_augment)
        check_model_options(cfg.model)
        data = input_settings(cfg.data, cfg.model)
        check_runs_at(cfg.model, data.image_resize)
        return replace(cfg, data=data)

    def resolve_data(self, cfg: Config) -> tuple[Config, list[str]]:
        """The data layout found in data_dir, and the training split's classes."""
        cfg = replace(cfg, data=resolve_layout(cfg.data))
        return cfg, dataset_classes(cfg.data)

    def default_metric(self, cfg: Config) -> str:
        return "top1"

    def plan_phases(self, cfg: Config, num_classes: int) -> list[Phase]:
        """The phases, from the model's structure."""
        model = model_structure(cfg, num_classes)
        lmap, ft = layer_map(model), cfg.finetune
        coarse = [k for k, on in (("strategy gradual", is_gradual(ft.strategy)),
                                  ("frozen_stages", ft.frozen_stages >= 0),
                                  ("layer_decay", ft.layer_decay is not None)) if on]
        if coarse and len(lmap.stages) < 4:
            logger.warning("%s: %s splits into only %d stages (stem, body, head); the setting is coarse for it",
                           " and ".join(coarse), type(model).__name__, len(lmap.stages))
        return plan_phases(model, lmap, ft, cfg.train.epoch_size)

    def resolve_caches(self, cfg: Config, phases: list[Phase], world_size: int) -> tuple[bool, str]:
        """Whether the frozen backbone's features are computed once, and the image cache asked for."""
        model = model_structure(cfg, cfg.model.num_classes)
        features = use_feature_cache(cfg, model, layer_map(model), phases)
        # images read once or twice for their features gain nothing from a pixel cache, unless it is asked for
        images = "none" if features and cfg.data.cache_images == "auto" else cfg.data.cache_images
        if world_size > 1 and images == "auto":
            logger.info("image cache: off in a distributed run (cache_images: ram or disk asks for it)")
            images = "none"
        return features, images

    def create_dataset(self, run: Run, split: str) -> Dataset | None:
        """`split`: train_split, or val_split (None when the run does not validate)."""
        data = run.cfg.data
        training = split == data.train_split
        if not training:
            if not run.cfg.train.val_while_train:
                return None
            check_split(data, split, hint="--val_while_train false trains without validation")
        return create_dataset(data, split, None, classes=list(run.classes),
                              image_mode=image_mode(run.cfg.model.in_channels),
                              scan_cache=run.out_dir / "scan_cache.json", draft_size=draft_size(data, training))

    def create_transforms(self, run: Run, is_training: bool, compute: Compute) -> Callable:
        """uint8 tensors on CUDA: the GPU normalises them (DevicePrefetcher)."""
        return create_transforms(run.cfg.data, is_training, uint8=compute.device.type == "cuda")

    def create_loader(self, run: Run, dataset: Dataset | None, transform: Callable, is_training: bool,
                      compute: Compute) -> DataLoader | None:
        """The dataset's loader with `transform` (its decoded images are cached with the features, once the model
        is built)."""
        if dataset is None:
            return None
        dataset.transform = transform
        cfg, cuda = run.cfg, compute.device.type == "cuda"
        loader = create_loader(dataset, cfg.loader, is_training, seed=cfg.train.seed if is_training else 0,
                               pin_memory=cuda, rank=distributed.rank(), world_size=distributed.world_size())
        return on_device(loader, compute, cfg.data, is_training)

    def create_model(self, run: Run, compute: Compute) -> tuple[nn.Module, str]:
        """The classifier with its configured weights (a resumed run's replace them), on its device."""
        model = create_model(run.cfg.model, num_classes=len(run.classes), input_size=run.cfg.data.image_resize)
        weights = load_initial_weights(model, run.cfg.model)
        return compute.prepare_model(distributed.sync_batchnorm(model, run.cfg.train.sync_bn, compute.device)), weights

    def cache_features(self, run: Run, model: nn.Module, compute: Compute, train_set: Dataset,
                       val_set: Dataset | None, train_loader: DataLoader, val_loader: DataLoader | None,
                       feature_memo: FeatureMemo | None = None) -> tuple[nn.Module, DataLoader, DataLoader | None]:
        """What batches go through and their loaders: the model on images, or (cache_features) its trained part on
        the frozen part's outputs, computed once (or read from `feature_memo`, a recipe search's). The decoded
        images are cached first (cache_images): after the model, so a run whose weights fail to load writes no
        cache."""
        if feature_memo is not None and (not run.cache_features or run.checkpoint is not None):
            # an earlier trial's outputs go before this run's caches; a resumed run's weights load after the
            # memo's key would be taken from them, so it reads none
            feature_memo.clear()
            feature_memo = None
        for dataset, is_training in ((train_set, True), (val_set, False)):
            if dataset is not None:
                _cache_images(run, dataset, is_training)
        if not run.cache_features:
            return model, train_loader, val_loader
        apply_phase(model, run.phases[0])
        cached = create_feature_loaders(model, compute, run.cfg, train_set, val_set, train_loader, val_loader,
                                        feature_memo)
        return cached if cached is not None else (model, train_loader, val_loader)

    def param_groups(self, run: Run, model: nn.Module, phase: Phase) -> list[dict[str, Any]]:
        optim = run.cfg.optim
        return build_param_groups(model, layer_map(model), run.cfg.finetune, lr=optim.lr,
                                  weight_decay=optim.weight_decay, weight_decay_filter=optim.weight_decay_filter,
                                  discriminative=phase.discriminative)

    def create_trainer(self, run: Run, model: nn.Module, compute: Compute, train_set: Dataset) -> Trainer:
        cfg, num_classes = run.cfg, len(run.classes)
        kept = sorted(set().union(*(phase.norm_eval for phase in run.phases)))  # unfreeze_bn: eval
        return engine.create_trainer(model, cfg.train, compute,
                                     create_mixup(cfg.loader, num_classes, cfg.train.label_smoothing),
                                     class_counts(train_set.targets, num_classes), freeze_bn=cfg.finetune.freeze_bn,
                                     norm_eval=tuple(model.get_submodule(name) for name in kept),
                                     aux_factor=cfg.model.aux_factor)

    def train_one_epoch(self, model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer,
                        scheduler: LRScheduler, trainer: Trainer, epoch: int, progress: EpochProgress | None,
                        after_step: Callable) -> EpochProgress:
        return engine.train_one_epoch(model, loader, optimizer, scheduler, trainer, epoch, progress, after_step)

    def evaluate(self, model: nn.Module, loader: DataLoader, trainer: Trainer, desc: str) -> dict[str, Any]:
        result = engine.evaluate(model, loader, trainer.compute, trainer.num_classes, desc=desc)
        top5 = result.top5 if reported_topk(trainer.num_classes) else None  # 100 % whatever the model with <= 5
        return {"val_loss": result.loss, "top1": result.top1, "top5": top5,
                "eval_images_per_s": result.images / max(result.seconds, 1e-9)}

    def row(self, epoch: int, stats: EpochProgress, scores: dict[str, Any] | None, seconds: float) -> dict[str, Any]:
        """results.txt's columns, then the rest of metrics.csv's."""
        scores = scores or {}
        return {"epoch": epoch, "lr": stats.lr, "train_loss": stats.loss, "val_loss": scores.get("val_loss"),
                "top1": scores.get("top1"), "top5": scores.get("top5"), "time_s": seconds,
                "train_images_per_s": stats.images / max(stats.seconds, 1e-9),
                "eval_images_per_s": scores.get("eval_images_per_s"), "ema_top1": None}

    def fingerprint(self, datasets: list[Dataset | None]) -> str:
        return data_fingerprint(datasets)

    def checkpoint_meta(self, train_set: Dataset) -> dict[str, Any]:
        return {}

    def create_results(self, run: Run) -> ResultsWriter:
        train = run.cfg.train
        return ResultsWriter(run.out_dir, ema=train.ema, csv=train.log_csv, tensorboard=train.log_tensorboard,
                             topk=reported_topk(len(run.classes)))

    def write_data_reports(self, run: Run, datasets: list[Dataset | None]) -> None:
        """bad_images.txt (the unreadable images left out), data_report.json (the audit's findings) and
        scan_cache.json (the start-up scan, which the next run over the same files reuses)."""
        present = [d for d in datasets if d is not None]
        write_bad_images(run.out_dir, present)
        write_report(audit(present[0], present[1] if len(present) > 1 else None), run.out_dir)
        write_scan_cache([d.scan_cache for d in present])

    def describe(self, run: Run, pipeline: Pipeline, plan: Plan) -> str:
        """The block logged before training: what is about to run, in the user's terms."""
        compute = pipeline.trainer.compute.describe()
        if run.world_size > 1:
            batch = run.cfg.loader.batch_size
            compute += f"; {run.world_size} processes x batch {batch} = global batch {run.world_size * batch}"
        steps = optimizer_steps(len(pipeline.train_loader), run.cfg.train.gradient_accumulation_steps)
        model = pipeline.model
        trains = phase_lines({name: p.numel() for name, p in model.named_parameters()}, layer_map(model), plan.phases)
        return run_summary(run.cfg, pipeline.train_set, pipeline.val_set, pipeline.weights, trains,
                           type(plan.optimizer).__name__, plan.table, steps, pipeline.train_loader.num_workers,
                           compute, _caches(pipeline), _class_weights(pipeline.trainer))

    def load_model(self, cfg: Config, classes: list[str], state: dict[str, Any], source: str) -> nn.Module:
        model = create_model(cfg.model, num_classes=len(classes), input_size=cfg.data.image_resize)
        load_exact(model, state, source=source)
        return model

    def validate(self, trained: TrainedModel, ckpt_path: str, split: str | None, output: str | None,
                 calibrate: bool, ann_file: str | None) -> list[str]:
        return validate_classifier(trained, ckpt_path, split, output, calibrate)

    def predict(self, trained: TrainedModel, paths: list[Path], options: PredictOptions
                ) -> tuple[list[dict[str, Any]], list[str]]:
        return predict_classes(trained, paths, options)

    def write_predictions(self, path: str, rows: list[dict[str, Any]]) -> None:
        write_table(path, rows)

    def prediction_line(self, row: dict[str, Any]) -> str:
        return "\t".join([row["path"], *(f"{name} {score:.4f}" for name, score in row["top"])])


def model_structure(cfg: Config, num_classes: int) -> nn.Module:
    """The model's modules and parameter names without its weights: built on the meta device (no memory), on the
    CPU for the few models whose build reads a tensor's values. (Either way before the run seeds its generators.)"""
    try:
        with torch.device("meta"):
            return create_model(cfg.model, num_classes, input_size=cfg.data.image_resize, quiet=True)
    except (RuntimeError, NotImplementedError):  # e.g. .item() of a meta tensor in the model's __init__
        return create_model(cfg.model, num_classes, input_size=cfg.data.image_resize, quiet=True)


def _class_weights(trainer: Trainer) -> list[float] | None:
    """The class weights the loss applies (class_weights: auto), or None."""
    loss = getattr(trainer.loss_fn, "loss", trainer.loss_fn)  # inside AuxiliaryLoss with aux_factor
    weight = loss.weight if isinstance(loss, nn.CrossEntropyLoss) else None
    return None if weight is None else weight.tolist()


def _caches(pipeline: Pipeline) -> str:
    """What is computed once and kept: decoded images, the frozen backbone's outputs."""
    parts = [f"{name} images {cache.storage} ({cache.nbytes / 1e6:.0f} MB)" for name, dataset in
             (("train", pipeline.train_set), ("val", pipeline.val_set))
             if (cache := getattr(dataset, "image_cache", None)) is not None]
    if pipeline.forward_model is not pipeline.model:
        views = pipeline.train_loader.num_views
        parts.append(f"features of the frozen backbone ({views} view{'s' if views > 1 else ''} per training image)")
    return "; ".join(parts) or "none"


def _cache_images(run: Run, dataset: Dataset, is_training: bool) -> None:
    """One disk cache for all processes of a distributed run: the first builds it, the others read it."""
    data = run.cfg.data
    cache_dir = Path(data.cache_dir) if data.cache_dir else run.out_dir / "cache"
    builds_first = distributed.is_main()
    if not builds_first:
        distributed.barrier()
    attach_image_cache(dataset, dataset.transform, run.cache_images, cache_dir, "train" if is_training else "val",
                       draft_size(data, is_training), data.cache_ram_gb)
    if builds_first:
        distributed.barrier()

