"""The measurements of `strategy: auto` (`tunecv.finetune.auto` decides from them). The training images, in the
evaluation transform, go once through the frozen lower stages; on their stored outputs, a linear probe and partial
fine-tunes (the top stage or two, and the head) train on most of the images for a couple of epochs and are scored
on a held-out slice.

The model, its weights, the data, the optimizer, lr, weight decay, label smoothing and schedule are the run's own.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from tunecv.data.loader import create_loader
from tunecv.data.transforms import create_transforms
from tunecv.errors import UserError
from tunecv.finetune import auto
from tunecv.finetune.phases import apply_phase
from tunecv.models.factory import classifier_names, kept_modes, set_train_mode
from tunecv.models.layer_map import layer_map
from tunecv.optim.optimizers import create_optimizer
from tunecv.optim.schedulers import create_scheduler
from tunecv.resolve import Run, with_strategy
from tunecv.tasks.base import Task
from tunecv.train import frozen_prefix
from tunecv.train.feature_cache import FeatureExtractor, stored_outputs_budget
from tunecv.utils import distributed
from tunecv.utils.runtime import Compute, free_memory, seed_everything

logger = logging.getLogger(__name__)


@dataclass
class Stored:
    """The training images' outputs of the frozen part (`inputs`: the pooled features themselves when the model is
    not split), their pooled features (the classifier's input), labels, and which rows fit and which are held
    out."""

    inputs: torch.Tensor
    features: torch.Tensor
    labels: torch.Tensor
    fit: torch.Tensor
    held: torch.Tensor
    prefix: frozen_prefix.Prefix | None


def choose_strategy(task: Task, device: torch.device, run: Run, lr: float) -> str:
    """The strategy `strategy: auto` stands for on this data (`run`: resolved as strategy full); the first process
    measures, every process takes its answer (or its error). `lr`: the partial fine-tunes'."""
    outcome = None
    if distributed.is_main():
        try:
            outcome = ("strategy", _measure_and_decide(task, device, run, lr))
        except UserError as err:
            outcome = ("error", str(err))
    kind, value = distributed.broadcast(outcome)
    if kind == "error":
        raise UserError(value)
    return value


def _measure_and_decide(task: Task, device: torch.device, run: Run, lr: float) -> str:
    cfg = run.cfg
    seed_everything(cfg.train.seed)
    compute = Compute.create(device, cfg.train.amp_level, cfg.train.channels_last)
    run = replace(run, cfg=replace(cfg, train=replace(cfg.train, sync_bn=False)))  # one process: no peers to sync
    train_set = task.create_dataset(run, cfg.data.train_split)
    fit, held = auto.holdout_split(train_set.targets, seed=cfg.train.seed)
    if len(held) < auto.MIN_HELD_OUT:
        return _decided(auto.too_few(len(held)), [], fit, held)
    model, _ = task.create_model(run, compute)
    depths = auto.partial_depths(len(layer_map(model).stages))
    prefix, unsplit = _split(task, model, compute, run, train_set, fit + held, depths)
    if prefix is not None:
        fit, held = auto.holdout_split(train_set.targets, seed=cfg.train.seed,
                                       max_images=min(auto.MAX_IMAGES, stored_outputs_budget(compute) // prefix[1]))
    start = time.perf_counter()
    stored = _store(model, compute, run, train_set, fit, held, prefix[0] if prefix else None)
    probe = _probe(stored, time.perf_counter() - start)
    measured, top_two, top_one = [probe], None, None
    if prefix is not None and auto.probe_leaves_room(probe, len(held)):
        initial = copy.deepcopy(model.state_dict())
        top_two = _partial(task, model, run, stored, depths[1], lr, "the top two stages and the head")
        measured.append(top_two)
        if auto.moderate(probe, top_two, len(held)):
            model.load_state_dict(initial)
            top_one = _partial(task, model, run, stored, depths[0], lr, "the top stage and the head")
            measured.append(top_one)
        del initial
    decision = auto.decide(probe, top_two, top_one, len(held), cfg.train.epoch_size, depths, unsplit)
    del model, stored
    free_memory()
    return _decided(decision, measured, fit, held)


def _decided(decision: auto.Decision, measured: list[auto.Measurement], fit: list[int], held: list[int]) -> str:
    logger.info(auto.decision_table(decision, measured, len(fit), len(held)))
    return decision.strategy


def _split(task: Task, model: nn.Module, compute: Compute, run: Run, train_set: Dataset, indices: list[int],
           depths: tuple[int, int] | None) -> tuple[tuple[frozen_prefix.Prefix, int] | None, str | None]:
    """((the prefix the partial fine-tunes keep frozen, its output's bytes per image), None), or (None, why the
    model cannot be split there)."""
    if depths is None:
        return None, f"{type(model).__name__} has too few stages to fine-tune its top apart"
    apply_phase(model, _phase(task, run, depths[1]))
    images = copy.copy(train_set)
    images.transform = create_transforms(run.cfg.data, is_training=False)
    sample = next((item for item in map(images.__getitem__, indices) if item), None)
    if sample is None:
        raise UserError("no training image decodes; check the files listed in bad_images.txt")
    classifier = model.get_submodule(classifier_names(model)[0])
    try:
        return frozen_prefix.checked_prefix(model, classifier, compute.inputs(sample[0][None])), None
    except frozen_prefix.NotCacheable as err:
        return None, str(err)


def _store(model: nn.Module, compute: Compute, run: Run, train_set: Dataset, fit: list[int], held: list[int],
           prefix: frozen_prefix.Prefix | None) -> Stored:
    """One pass of the training images (evaluation transform) through the frozen `prefix`, or through the whole
    model when it cannot be split."""
    images = copy.copy(train_set)
    images.transform = create_transforms(run.cfg.data, is_training=False)
    chosen = sorted(set(fit) | set(held))
    loader = create_loader(_Rows(images, chosen), run.cfg.loader, is_training=False,
                           pin_memory=compute.device.type == "cuda", persistent=False)
    inputs, labels, rows = FeatureExtractor(model, compute, prefix)(loader, "strategy auto: one backbone pass")
    features = _pooled(model, compute, prefix, inputs) if prefix is not None else inputs
    position = {chosen[row]: at for at, row in enumerate(rows.tolist())}
    as_rows = [torch.tensor([position[i] for i in part if i in position], dtype=torch.long) for part in (fit, held)]
    return Stored(inputs, features, labels, *as_rows, prefix)


class _Rows(Dataset):
    """Some of a dataset's images; each item's index is its position here."""

    def __init__(self, dataset: Dataset, indices: list[int]) -> None:
        self.dataset, self.indices = dataset, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int):
        item = self.dataset[self.indices[index]]
        return None if item is None else (item[0], item[1], index)


@torch.inference_mode()
def _pooled(model: nn.Module, compute: Compute, prefix: frozen_prefix.Prefix, inputs: torch.Tensor,
            batch: int = 256) -> torch.Tensor:
    """The classifier's inputs for stored prefix outputs: the rest of the (pretrained) model, evaluation mode."""
    captured: list[torch.Tensor] = []
    classifier = model.get_submodule(classifier_names(model)[0])
    hook = classifier.register_forward_pre_hook(lambda _, args: captured.append(args[0].float().flatten(1)))
    try:
        with kept_modes(model):
            model.eval()
            rest = frozen_prefix.PrefixSkipped(model, prefix)
            for chunk in inputs.split(batch):
                with compute.autocast():
                    rest(chunk)
    finally:
        hook.remove()
    return torch.cat(captured)


def _probe(stored: Stored, seconds: float) -> auto.Measurement:
    """A logistic regression on the pooled features (centred, one scale for all)."""
    from sklearn.linear_model import LogisticRegression  # imported when measured: finetune.py starts without it

    start = time.perf_counter()
    x, y = stored.features.cpu().numpy().astype(np.float64), stored.labels.cpu().numpy()
    fit, held = stored.fit.numpy(), stored.held.numpy()
    mean, scale = x[fit].mean(0), float(x[fit].std()) or 1.0
    probe = LogisticRegression(max_iter=1000).fit((x[fit] - mean) / scale, y[fit])
    top1 = 100.0 * float(np.mean(probe.predict((x[held] - mean) / scale) == y[held]))
    return auto.Measurement("linear probe (logistic regression on the frozen features)", top1,
                            seconds + time.perf_counter() - start)


def _phase(task: Task, run: Run, frozen_stages: int):
    return task.plan_phases(with_strategy(run.cfg, f"freeze:{frozen_stages}"), len(run.classes))[0]


def _partial(task: Task, model: nn.Module, run: Run, stored: Stored, frozen_stages: int, lr: float,
             what: str) -> auto.Measurement:
    """freeze:`frozen_stages` trained on the stored outputs of the fit rows for a few epochs with the run's
    optimizer, lr and schedule (no augmentation: the inputs are stored), scored on the held-out rows."""
    start = time.perf_counter()
    cfg = run.cfg
    partial = replace(run, cfg=replace(with_strategy(cfg, f"freeze:{frozen_stages}"),
                                       optim=replace(cfg.optim, lr=lr)))
    phase = _phase(task, partial, frozen_stages)
    apply_phase(model, phase)
    forward = frozen_prefix.PrefixSkipped(model, stored.prefix)
    epochs, batch = auto.PARTIAL_EPOCHS, cfg.loader.batch_size
    steps = max(1, math.ceil(len(stored.fit) / batch))
    optimizer = create_optimizer(task.param_groups(partial, model, phase), cfg.optim, lr)
    sched = replace(cfg.sched, warmup_epochs=min(cfg.sched.warmup_epochs, epochs / 2), warmup_iters=None,
                    decay_epochs=None)
    scheduler = create_scheduler(optimizer, sched, lr=lr, steps_per_epoch=steps, epochs=epochs)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.train.label_smoothing)
    generator = torch.Generator().manual_seed(cfg.train.seed)
    device = stored.inputs.device
    for _ in range(epochs):
        set_train_mode(model, keep_frozen_eval=cfg.finetune.freeze_bn)
        for rows in stored.fit[torch.randperm(len(stored.fit), generator=generator)].split(batch):
            if len(rows) < 2:  # BatchNorm cannot train on one image
                continue
            rows = rows.to(device)
            loss = loss_fn(forward(stored.inputs[rows]).float(), stored.labels[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
    model.eval()
    with torch.inference_mode():
        held = stored.held.to(device)
        predicted = torch.cat([forward(stored.inputs[rows]).argmax(1) for rows in held.split(256)])
    top1 = 100.0 * float((predicted == stored.labels[held]).float().mean())
    return auto.Measurement(f"{what} ({epochs} epochs on the stored outputs)", top1, time.perf_counter() - start)
