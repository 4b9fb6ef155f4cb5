"""Frozen-backbone feature cache: the frozen part of the model runs once per image (and view) and the rest trains
on its stored output: the classifier alone on the inputs it would have seen, or the layers after a frozen prefix
(`tunecv.train.frozen_prefix`). Epochs after the first take milliseconds when only the classifier trains.

`FeatureLoader` stands in for the image loaders (same batches per epoch, same shuffling rules); it computes its
features on first use, so the first epoch carries their cost and the run's wall time stays honest.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader

from tunecv.config import Config
from tunecv.data.image_cache import ram_budget
from tunecv.data.loader import create_loader
from tunecv.data.sampler import EpochSampler
from tunecv.data.transforms import create_transforms
from tunecv.errors import UserError
from tunecv.finetune.phases import Phase
from tunecv.models.factory import classifier_names, kept_modes, set_train_mode
from tunecv.models.layer_map import LayerMap
from tunecv.train import frozen_prefix
from tunecv.train.feature_loader import FeatureLoader, cycle_views, flip_views
from tunecv.train.feature_memo import FeatureMemo, features_key
from tunecv.train.frozen_prefix import NotCacheable
from tunecv.utils.progress import progress_bar
from tunecv.utils.runtime import Compute

logger = logging.getLogger(__name__)


class FeatureHead(nn.Module):
    """The classifier as the model applies it to its pooled features: the model's dropout, then the layer."""

    def __init__(self, classifier: nn.Module, drop_rate: float) -> None:
        super().__init__()
        self.classifier, self.drop_rate = classifier, drop_rate

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(nn.functional.dropout(features, self.drop_rate, self.training))


def why_not_cacheable(cfg: Config, model: nn.Module, lmap: LayerMap, phases: Sequence[Phase]) -> str | None:
    """None when the classifier's inputs are the same every epoch, else the reason they are not."""
    names = classifier_names(model)
    if len(names) != 1:
        return f"the model has {len(names)} classifiers ({', '.join(names)})"
    if len(phases) > 1:
        return "layers unfreeze during the run"
    if not set(lmap.stages[0]) <= phases[0].frozen:
        return "the stem trains: no frozen layers to run once"
    if not cfg.finetune.freeze_bn:
        return "freeze_bn: false updates the frozen BatchNorm statistics every epoch"
    if cfg.loader.mixup > 0 or cfg.loader.cutmix > 0:
        return "mixup/cutmix mix images, not features"
    if cfg.train.ema:
        return "ema averages the whole model"
    return None


def use_feature_cache(cfg: Config, model: nn.Module, lmap: LayerMap, phases: Sequence[Phase]) -> bool:
    """cache_features: auto caches when it changes nothing (deterministic transform); true insists. `model` may
    be a structure without weights (on the meta device)."""
    mode, random_views = cfg.finetune.cache_features, not cfg.data.no_aug
    if mode == "false":
        return False
    reason = why_not_cacheable(cfg, model, lmap, phases)
    if reason is None and random_views and mode == "auto":
        reason = "the training transform is random (no_aug: true makes it deterministic)"
    if reason is None and random_views and cfg.finetune.feature_views < 1:
        raise UserError("cache_features: true with random augmentation needs feature_views N (augmented views per "
                        "image, computed once); or set no_aug: true")
    if reason is not None:
        if mode == "true":
            raise UserError(f"cache_features: true, but {reason}; set cache_features: auto or false")
        logger.info("feature cache: off (%s)", reason)
        return False
    return True


def dropout_rate(eval_features: torch.Tensor, train_features: torch.Tensor) -> float | None:
    """p of a dropout applied to the classifier's input in training mode (train = eval x mask / (1 - p)), 0.0 when
    training mode changes nothing, None when it changes the features in any other way."""
    if torch.allclose(train_features, eval_features, rtol=1e-4, atol=1e-5):
        return 0.0
    large = eval_features.abs() > 1e-3 * eval_features.abs().max()
    ratio = train_features[large] / eval_features[large]
    kept = ratio.abs() > 1e-3
    if not kept.any() or kept.all():
        return None
    scale = ratio[kept].median()
    if not torch.allclose(ratio[kept], scale.expand(int(kept.sum())), rtol=1e-3) or scale <= 1:
        return None
    return round(float(1 - 1 / scale), 4)


class FeatureExtractor:
    """The frozen model run to its classifier's input (a forward pre-hook), or to the output of its frozen
    `prefix` (the rest not run), under inference_mode."""

    def __init__(self, model: nn.Module, compute: Compute, prefix: frozen_prefix.Prefix | None = None) -> None:
        self.model, self.compute, self.prefix = model, compute, prefix
        self.name = classifier_names(model)[0]
        self.classifier = model.get_submodule(self.name)

    @torch.inference_mode()
    def __call__(self, loader: DataLoader, desc: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(features, labels, dataset indices) on the device, float32."""
        captured: list[torch.Tensor] = []
        hook = self.classifier.register_forward_pre_hook(lambda _, args: captured.append(args[0].float().flatten(1)))
        labels, indices = [], []
        try:
            with kept_modes(self.model):
                self.model.eval()
                for batch in progress_bar(loader, desc=desc):
                    if batch is None:
                        continue
                    inputs = self.compute.inputs(batch[0])
                    with self.compute.autocast():
                        if self.prefix is not None:
                            captured.append(frozen_prefix.prefix_output(self.model, self.prefix, inputs).float())
                        else:
                            self.model(inputs)
                    labels.append(batch[1])
                    indices.append(batch[2])
        finally:
            hook.remove()
        return (torch.cat(captured), torch.cat(labels).to(self.compute.device),
                torch.cat(indices).to(self.compute.device))

    def check(self, images: torch.Tensor) -> float:
        """The dropout rate on the classifier's input in training; NotCacheable unless the model's output is the
        classifier applied to its captured 2-D input (tested with random classifier weights, since a zero-initialised
        head agrees with anything) and training mode changes that input by a dropout at most."""
        captured: list[torch.Tensor] = []
        inputs = self.compute.inputs(images)
        with frozen_prefix.random_weights(self.classifier), kept_modes(self.model), torch.no_grad():
            hook = self.classifier.register_forward_pre_hook(lambda _, args: captured.append(args[0].float()))
            try:
                self.model.eval()
                output = self.model(inputs)
                set_train_mode(self.model, keep_frozen_eval=True)
                self.model(inputs)
            finally:
                hook.remove()
            features, training_features = captured
            direct = self.classifier(features)
        if features.ndim != 2 or output.shape != direct.shape or \
                not torch.allclose(output.float(), direct.float(), rtol=1e-3, atol=1e-3):
            raise NotCacheable(f"{type(self.model).__name__}'s output is not its classifier ({self.name}) applied to "
                               "pooled features")
        rate = dropout_rate(features, training_features)
        if rate is None:
            raise NotCacheable("something random runs below the classifier in training (not a dropout on its input)")
        return rate


def create_feature_loaders(model: nn.Module, compute: Compute, cfg: Config, train_set, val_set,
                           train_loader: DataLoader, val_loader: DataLoader | None, memo: FeatureMemo | None = None
                           ) -> tuple[FeatureHead, FeatureLoader, FeatureLoader | None] | None:
    """The classifier as a module of its own, and loaders of the frozen model's outputs for it, batched as the
    image loaders are (`val_loader`: the evaluation image loader, run once); None when the model turns out not
    to allow it (`cache_features: auto`). The first phase's freezing must be applied. `memo`: the outputs an
    earlier run of this process kept (a recipe search's trials), read when they are this run's, else released
    before this run measures its memory, and filled with this run's."""
    views, transforms, pick = _view_loaders(cfg, compute, train_set)
    # the first training image that decodes (a file truncated mid-way passes the start-up scan)
    first_view = views[0].dataset.dataset  # the image dataset inside SeededSamples: read by index
    sample = next((item for item in map(first_view.__getitem__, range(len(train_set))) if item), None)
    sizes = len(train_set) * len(views) + (len(val_set) if val_loader is not None else 0)
    validated = val_set if val_loader is not None else None
    try:
        if sample is None:
            raise NotCacheable("no training image decodes")
        forward_model, extractor, per_image = _forward_model(model, compute, sample[0][None])
        kept = None
        if memo is not None:  # the frozen weights and every file hashed: only where a next run may read them
            kept = memo.outputs_for(features_key(model, compute, cfg, [train_set, validated], [*transforms, getattr(
                validated, "transform", None)], extractor.prefix))
        _check_budget(compute, per_image * sizes - (memo.nbytes() if memo is not None else 0), extractor)
    except NotCacheable as err:
        if memo is not None:
            memo.clear()
        if cfg.finetune.cache_features == "true":
            raise UserError(f"cache_features: true, but {err}; set cache_features: auto or false") from None
        logger.info("feature cache: off (%s)", err)
        return None
    train = FeatureLoader(extractor, views, train_loader.batch_sampler, pick, cfg.train.seed + 1, "train", kept)
    val = None
    if val_loader is not None:
        val = FeatureLoader(extractor, [val_loader], val_loader.batch_sampler, cycle_views(1), 0, "val", kept)
    what = f"the layers after {extractor.prefix.last}" if extractor.prefix else "the classifier"
    logger.info("feature cache: %s train%s on the frozen layers' outputs (%d view%s per training image)", what,
                "" if extractor.prefix else "s", len(views), "s" if len(views) > 1 else "")
    return forward_model, train, val


def _view_loaders(cfg: Config, compute: Compute, train_set) -> tuple[list[DataLoader], list[Callable], Callable]:
    """One in-order loader of the training images per view (a flip combination, or one of N augmented copies),
    their transforms, and the picker of each image's view per epoch."""
    data = cfg.data
    if data.no_aug:
        combos, pick = flip_views(data.hflip, data.vflip)
        transforms = [create_transforms(data, is_training=True, flips=combo) for combo in combos]
    else:
        pick = cycle_views(cfg.finetune.feature_views)
        transforms = [create_transforms(data, is_training=True)] * cfg.finetune.feature_views
    views = []
    for view, transform in enumerate(transforms):
        dataset = copy.copy(train_set)
        dataset.transform = transform
        in_order = EpochSampler(len(dataset), cfg.train.seed, shuffle=False)
        in_order.set_epoch(view + 1)  # each view its own augmentation seeds
        views.append(create_loader(dataset, cfg.loader, is_training=False, sampler=in_order,
                                   pin_memory=compute.device.type == "cuda", persistent=False))
    return views, transforms, pick


def _forward_model(model: nn.Module, compute: Compute, image: torch.Tensor
                   ) -> tuple[nn.Module, FeatureExtractor, int]:
    """The classifier alone (with the dropout on its input) when only it trains, else the model with its frozen
    prefix skipped; and the bytes of the stored output per image (0: the classifier's inputs are not counted).
    NotCacheable when neither stands for the model."""
    extractor = FeatureExtractor(model, compute)
    head = {id(p) for p in extractor.classifier.parameters()}
    if not any(p.requires_grad and id(p) not in head for p in model.parameters()):
        return FeatureHead(extractor.classifier, extractor.check(image)), extractor, 0
    prefix, per_image = frozen_prefix.checked_prefix(model, extractor.classifier, compute.inputs(image))
    return frozen_prefix.PrefixSkipped(model, prefix), FeatureExtractor(model, compute, prefix), per_image


def _check_budget(compute: Compute, needed: int, extractor: FeatureExtractor) -> None:
    """NotCacheable when `needed` bytes of new stored outputs exceed the budget (measured once an earlier run's
    outputs that this run does not read are released; the ones it reads need nothing new)."""
    if needed <= 0:
        return
    budget = stored_outputs_budget(compute)
    if needed > budget:
        raise NotCacheable(f"the outputs of the layers up to {extractor.prefix.last} need {needed / 2**30:.1f} GB, "
                           f"more than the {budget / 2**30:.1f} GB budget")


def stored_outputs_budget(compute: Compute) -> int:
    """Bytes the stored outputs of frozen layers may take: half the free GPU memory, or the RAM cache budget."""
    return torch.cuda.mem_get_info(compute.device)[0] // 2 if compute.device.type == "cuda" else ram_budget(None)
