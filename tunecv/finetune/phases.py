"""Phases: which parameters train in which epochs (`plan_phases`, from the freeze keys of
`tunecv.finetune.freezing` and the strategy), and the `Plan` that starts each phase with its trainable set, parameter
groups, optimizer and lr schedule. One phase for most runs; freeze_epochs, unfreeze_schedule and gradual add more."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

from tunecv.config import FinetuneConfig
from tunecv.errors import UserError
from tunecv.finetune.freezing import frozen_names, match_all
from tunecv.finetune.param_groups import group_table
from tunecv.finetune.strategies import is_gradual
from tunecv.models.factory import count_params
from tunecv.models.layer_map import LayerMap

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Phase:
    """Epochs `start`..`end` (1-based, inclusive) train with `frozen` fixed. `discriminative`: unfreeze_lr_scale
    applies; `restart`: the phase has an lr schedule of its own (fastai fine_tune's two fits), else the run's
    schedule continues; `norm_eval`: the BatchNorm modules that train but keep their pretrained statistics
    (unfreeze_bn: eval)."""

    start: int
    end: int
    frozen: frozenset[str]
    discriminative: bool = False
    restart: bool = False
    label: str = ""
    norm_eval: frozenset[str] = frozenset()


def plan_phases(model: nn.Module, lmap: LayerMap, ft: FinetuneConfig, epochs: int) -> list[Phase]:
    names = lmap.names
    base = frozen_names(model, lmap, ft)
    head_alone = (set(names) - set(lmap.classifier)) | base
    if ft.freeze_epochs:
        phases = [Phase(1, ft.freeze_epochs, frozenset(head_alone), restart=True, label="classifier only"),
                  Phase(ft.freeze_epochs + 1, epochs, frozenset(base), True, True, "unfrozen")]
    elif ft.unfreeze_schedule:
        phases = _scheduled(model, names, head_alone, base, ft.unfreeze_schedule, epochs)
    elif is_gradual(ft.strategy):
        phases = _gradual(lmap, base, epochs)
    else:
        phases = [Phase(1, epochs, frozenset(base))]
    for phase in phases:
        if set(names) <= phase.frozen:
            raise UserError(f"epochs {phase.start}-{phase.end}: every parameter is frozen; "
                            "check freeze, frozen_stages, freeze_layers and freeze_patterns")
    _check_unfreeze_keys(ft)
    return _keep_norm_statistics(model, phases) if ft.unfreeze_bn == "eval" else phases


def _check_unfreeze_keys(ft: FinetuneConfig) -> None:
    """unfreeze_bn and unfreeze_head_lr_scale act after an unfreeze: without one they would do nothing."""
    if not 0 < ft.unfreeze_head_lr_scale <= 1:
        raise UserError(f"unfreeze_head_lr_scale must be in (0, 1], got {ft.unfreeze_head_lr_scale}")
    if ft.freeze_epochs or ft.unfreeze_schedule or is_gradual(ft.strategy):
        return
    for key, value, default in (("unfreeze_bn", ft.unfreeze_bn, "train"),
                                ("unfreeze_head_lr_scale", ft.unfreeze_head_lr_scale, 1.0)):
        if value != default:
            raise UserError(f"{key} applies to layers that unfreeze during the run; use it with freeze_epochs, "
                            "unfreeze_schedule or strategy lp_ft/gradual (freeze_bn covers layers frozen all run)")


def _keep_norm_statistics(model: nn.Module, phases: list[Phase]) -> list[Phase]:
    """Each phase's BatchNorm modules that were frozen in the first phase and train now. Kept in eval mode, they
    normalise as in the first phase, where the head was fitted: in train mode a batch of 16 normalises by its own
    statistics and the running ones drift to them, so the head sees other features (measured in
    docs/strategies.md: the cause of the drop after the unfreeze, not the backbone's lr)."""
    norms = {name: {f"{name}.{p}" if name else p for p, _ in module.named_parameters(recurse=False)}
             for name, module in model.named_modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)}
    started_frozen = {name: params for name, params in norms.items() if params and params <= phases[0].frozen}
    return [replace(phase, norm_eval=frozenset(name for name, params in started_frozen.items()
                                               if not params & phase.frozen)) for phase in phases]


def _scheduled(model: nn.Module, names: list[str], start: set[str], base: set[str],
               schedule: dict[int, tuple[str, ...]], epochs: int) -> list[Phase]:
    """From the classifier alone, unfreeze what each epoch's patterns match; the freeze keys' set stays frozen."""
    phases, frozen, begin = [], set(start), 1
    for epoch in sorted(schedule):
        phases.append(Phase(begin, epoch - 1, frozenset(frozen), discriminative=begin > 1,
                            label="classifier only" if begin == 1 else f"unfrozen at epoch {begin}"))
        frozen -= match_all(schedule[epoch], names, model, key=f"unfreeze_schedule[{epoch}]") - base
        begin = epoch
    phases.append(Phase(begin, epochs, frozenset(frozen), discriminative=begin > 1,
                        label=f"unfrozen at epoch {begin}"))
    return phases


def _gradual(lmap: LayerMap, base: set[str], epochs: int) -> list[Phase]:
    """ULMFiT-style: epoch 1 trains the head group; then the stages unfreeze top-down in equal chunks, so the
    whole model trains from the middle of the run."""
    stages = list(reversed(lmap.stages[:-1]))
    events = min(max(1, epochs // 2), len(stages), epochs - 1)
    if events < 1:
        logger.warning("strategy gradual: one epoch trains the head group only; raise epoch_size to unfreeze")
        return [Phase(1, epochs, frozenset((set(lmap.names) - set(lmap.stages[-1])) | base), label="head group")]
    frozen = {n for stage in stages for n in stage} | base
    phases, begin = [], 1
    size, extra = divmod(len(stages), events)
    cursor = 0
    for event in range(events):
        phases.append(Phase(begin, begin, frozenset(frozen), discriminative=begin > 1,
                            label="head group" if begin == 1 else f"top {cursor} stages + head"))
        chunk = size + (1 if event < extra else 0)
        frozen -= {n for stage in stages[cursor:cursor + chunk] for n in stage} - base
        cursor += chunk
        begin += 1
    phases.append(Phase(begin, epochs, frozenset(frozen), discriminative=True, label="all stages"))
    return phases


def best_before_unfreeze(phases: list[Phase] | tuple[Phase, ...], history: list[dict], best_epoch: int,
                         metric: str) -> str:
    """A line for the run's summary when its best epoch came before the first unfreeze (lp_ft, gradual,
    freeze_epochs): the later epochs' peak, and that `_best` holds the head-only weights, so the model delivered is
    never below the head-only phase. Empty otherwise."""
    if len(phases) < 2 or not 1 <= best_epoch <= phases[0].end:
        return ""
    scored = [(row["epoch"], row[metric]) for row in history if row.get(metric) is not None]
    before = [value for epoch, value in scored if epoch <= phases[0].end]
    later = [value for epoch, value in scored if epoch > phases[0].end]
    if not later or not before or max(later) >= max(before):
        return ""
    first = phases[0]
    span = f"epoch {first.end}" if first.start == first.end else f"epochs {first.start}-{first.end}"
    return (f"  {span} ({first.label or 'first phase'}) scored best: the epochs after the unfreeze peaked at "
            f"{max(later):.2f}, so the best checkpoint keeps the weights from before it")


def apply_phase(model: nn.Module, phase: Phase) -> None:
    """requires_grad per the phase: frozen parameters get no gradient (their backward is skipped)."""
    for name, param in model.named_parameters():
        param.requires_grad = name not in phase.frozen


def phase_schedule(phase: Phase, epochs: int, steps_per_epoch: int) -> dict[str, int]:
    """create_scheduler's `epochs` and `start_step` for a phase: a restarting phase has a schedule of its own; the
    others continue the run's at their first step."""
    if phase.restart:
        return {"epochs": phase.end - phase.start + 1, "start_step": 0}
    return {"epochs": epochs, "start_step": (phase.start - 1) * steps_per_epoch}


@dataclass
class Plan:
    """The run's phases, each started when its first epoch comes: `start_phase` (the entry script's) freezes and
    unfreezes for it and builds its optimizer and scheduler, with fresh optimizer state."""

    model: nn.Module
    phases: tuple[Phase, ...]
    start_phase: Callable[[Phase], tuple[torch.optim.Optimizer, LRScheduler]]
    table: str = ""
    trainable: int = 0
    current: Phase | None = None
    optimizer: torch.optim.Optimizer | None = None
    scheduler: LRScheduler | None = None

    def enter(self, epoch: int) -> tuple[torch.optim.Optimizer, LRScheduler]:
        """The optimizer and scheduler for `epoch`, starting its phase when it begins there."""
        phase = next(p for p in self.phases if p.start <= epoch <= p.end)
        if phase is not self.current:
            self.start(phase)
        return self.optimizer, self.scheduler

    def start(self, phase: Phase) -> tuple[torch.optim.Optimizer, LRScheduler]:
        optimizer, scheduler = self.start_phase(phase)
        self.table = group_table(self.model, optimizer.param_groups)
        self.trainable = count_params(self.model)[0]
        self.current, self.optimizer, self.scheduler = phase, optimizer, scheduler
        if len(self.phases) > 1 and phase.start > 1:
            kept = f"\n  BatchNorm of {len(phase.norm_eval)} unfrozen layers keeps its pretrained statistics " \
                   "(unfreeze_bn: eval)" if phase.norm_eval else ""
            logger.info("epochs %d-%d (%s): %s trainable parameters\n%s%s", phase.start, phase.end,
                        phase.label or "phase", f"{self.trainable:,}", self.table, kept)
        return optimizer, scheduler
