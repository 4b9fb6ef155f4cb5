"""Fine-tuning strategy: which parameters train in which epochs, from the model's layer map (`tunecv.models.layer_map`).

Name patterns (`compile_pattern`, `match_names`, MindCV's `features.N`), the freeze keys (`frozen_names`) and
`plan_phases`, which turns them into epoch ranges with a frozen set.
"""

from __future__ import annotations

import fnmatch
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from torch import nn

from tunecv.config.values import closest_hint
from tunecv.errors import UserError
from tunecv.models.layer_map import LayerMap, mindcv_feature_prefixes

if TYPE_CHECKING:
    from tunecv.config import FinetuneConfig

logger = logging.getLogger(__name__)

GLOB_CHARS = set("*?[")
EVERYTHING = ("*", "all")
MINDCV_FEATURE = re.compile(r"^features\.(\d+)(\..*)?$")


def compile_pattern(pattern: str, key: str = "pattern") -> Callable[[str], bool]:
    """A module/parameter name matches itself and everything under it; `*?[` make a glob; `re:` a regex search."""
    if pattern.startswith("re:"):
        try:
            regex = re.compile(pattern[3:])
        except re.error as err:
            raise UserError(f"{key}: {pattern!r} is not a valid regular expression: {err}") from None
        return lambda name: regex.search(name) is not None
    if GLOB_CHARS & set(pattern):
        return lambda name: fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(name, f"{pattern}.*")
    return lambda name: name == pattern or name.startswith(f"{pattern}.")


def match_names(pattern: str, names: Iterable[str], model: nn.Module | None = None, *, key: str) -> list[str]:
    """Names matched by `pattern`; a pattern that matches nothing is a UserError naming `key`."""
    names = list(names)
    if pattern in EVERYTHING:
        return names
    written, feature = pattern, MINDCV_FEATURE.match(pattern)
    mindcv_names = feature is not None and not any(n.startswith("features.") for n in names)
    prefixes = mindcv_feature_prefixes(model) if model is not None and mindcv_names else None
    if prefixes is not None:
        index = int(feature.group(1))
        if index >= len(prefixes):
            raise UserError(f"{key}: {pattern} is past MindCV's last layer features.{len(prefixes) - 1}")
        if prefixes[index] is None:
            return []  # an activation: MindCV's loop over features.N skips it the same way
        pattern = prefixes[index] + (feature.group(2) or "")
    matches = compile_pattern(pattern, key)
    found = [n for n in names if matches(n)]
    if not found:
        modules = sorted({".".join(n.split(".")[:depth]) for n in names for depth in (1, 2, 3)})
        hint = closest_hint(pattern, modules)
        if mindcv_names and prefixes is None:
            hint += "; MindCV's features.N names are mapped for mobilenet_v3 only: use freeze_layers or timm names"
        elif written.removeprefix("re:").startswith(("backbone", "neck")):
            hint += "; timm models have no MMPretrain backbone./neck. prefix: name their modules (blocks, classifier)"
        mapped = f" (MindCV's name for {pattern})" if written != pattern else ""
        raise UserError(f"{key}: pattern {written!r}{mapped} matches no parameter{hint} "
                        "(patterns: module name, glob like blocks.1*, or re:regex)")
    return found


def match_all(patterns: Iterable[str], names: list[str], model: nn.Module | None, *, key: str) -> set[str]:
    return {n for pattern in patterns for n in match_names(pattern, names, model, key=key)}


def frozen_names(model: nn.Module, lmap: LayerMap, ft: FinetuneConfig) -> set[str]:
    """Parameters kept frozen for the whole run by freeze, frozen_stages, freeze_layers and the patterns."""
    names = lmap.names
    frozen: set[str] = set()
    if ft.freeze == "all":
        frozen |= set(names) - set(lmap.classifier)
    elif ft.freeze == "head_only":
        frozen |= set(names) - set(lmap.layers[-1])
    if ft.frozen_stages >= 0:
        backbone = len(lmap.stages) - 2  # without stem and head group
        if ft.frozen_stages > backbone:
            raise UserError(f"frozen_stages {ft.frozen_stages}: {model.__class__.__name__} has a stem and "
                            f"{backbone} stages; use 0..{backbone} (freeze: all trains the classifier alone)")
        frozen |= {n for stage in lmap.stages[:ft.frozen_stages + 1] for n in stage}
    if ft.freeze_layers:
        if ft.freeze_layers >= len(lmap.layers):
            raise UserError(f"freeze_layers {ft.freeze_layers}: the model has {len(lmap.layers) - 1} layers before "
                            f"its head; use at most {len(lmap.layers) - 1}")
        frozen |= {n for layer in lmap.layers[:ft.freeze_layers] for n in layer}
    frozen |= match_all(ft.freeze_patterns, names, model, key="freeze_patterns")
    frozen -= match_all(ft.unfreeze_patterns, names, model, key="unfreeze_patterns")
    return frozen


@dataclass(frozen=True)
class Phase:
    """Epochs `start`..`end` (1-based, inclusive) train with `frozen` fixed. `discriminative`: unfreeze_lr_scale
    applies; `restart`: the phase has an lr schedule of its own (fastai fine_tune's two fits), else the run's
    schedule continues."""

    start: int
    end: int
    frozen: frozenset[str]
    discriminative: bool = False
    restart: bool = False
    label: str = ""


def plan_phases(model: nn.Module, lmap: LayerMap, ft: FinetuneConfig, epochs: int) -> list[Phase]:
    names = lmap.names
    base = frozen_names(model, lmap, ft)
    head_alone = (set(names) - set(lmap.classifier)) | base
    if ft.freeze_epochs:
        phases = [Phase(1, ft.freeze_epochs, frozenset(head_alone), restart=True, label="classifier only"),
                  Phase(ft.freeze_epochs + 1, epochs, frozenset(base), True, True, "unfrozen")]
    elif ft.unfreeze_schedule:
        phases = _scheduled(model, names, head_alone, base, ft.unfreeze_schedule, epochs)
    elif ft.strategy == "gradual":
        phases = _gradual(lmap, base, epochs)
    else:
        phases = [Phase(1, epochs, frozenset(base))]
    for phase in phases:
        if set(names) <= phase.frozen:
            raise UserError(f"epochs {phase.start}-{phase.end}: every parameter is frozen; "
                            "check freeze, frozen_stages, freeze_layers and freeze_patterns")
    return phases


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


def apply_phase(model: nn.Module, phase: Phase) -> None:
    """requires_grad per the phase: frozen parameters get no gradient (their backward is skipped)."""
    for name, param in model.named_parameters():
        param.requires_grad = name not in phase.frozen
