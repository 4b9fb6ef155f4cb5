"""Fine-tuning strategy: which parameters train in which epochs, from the model's own layer map.

`layer_map` orders a model's parameters into layers (fine) and stages (coarse) with timm's `group_matcher`, so
`frozen_stages`, `freeze_layers`, `gradual` and `layer_decay` mean the same on every timm family; torchvision
models fall back to their module order. `plan_phases` turns the freeze keys into epoch ranges with a frozen set.
"""

from __future__ import annotations

import fnmatch
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from timm.models import group_parameters
from torch import nn

from tunecv.config_values import closest_hint
from tunecv.errors import UserError
from tunecv.models import classifier_name

if TYPE_CHECKING:
    from tunecv.config import FinetuneConfig

logger = logging.getLogger(__name__)

GLOB_CHARS = set("*?[")
EVERYTHING = ("*", "all")
MINDCV_FEATURE = re.compile(r"^features\.(\d+)(\..*)?$")


@dataclass(frozen=True)
class LayerMap:
    """Parameter names in forward order: `layers` fine-grained (blocks), `stages` coarse; both start with the stem
    and end with the head group (neck + classifier). `classifier`: the new classification layer's parameters."""

    layers: tuple[tuple[str, ...], ...]
    stages: tuple[tuple[str, ...], ...]
    classifier: tuple[str, ...]

    @property
    def names(self) -> list[str]:
        return [name for layer in self.layers for name in layer]

    def layer_index(self) -> dict[str, int]:
        return {name: i for i, layer in enumerate(self.layers) for name in layer}


def layer_map(model: nn.Module) -> LayerMap:
    names = [name for name, _ in model.named_parameters()]
    head = classifier_name(model)
    classifier = tuple(n for n in names if n.startswith(f"{head}."))
    if hasattr(model, "group_matcher"):
        fine = _merge_head(model, _groups(group_parameters(model, model.group_matcher(coarse=False))))
        coarse = _merge_head(model, _groups(group_parameters(model, model.group_matcher(coarse=True))))
    else:
        fine = coarse = _module_order(model, head)
    return LayerMap(_classifier_last(fine, classifier), _classifier_last(coarse, classifier), classifier)


def _groups(grouped: dict[int, list[str]]) -> list[tuple[str, ...]]:
    return [tuple(grouped[k]) for k in sorted(grouped) if grouped[k]]


def _merge_head(model: nn.Module, groups: list[tuple[str, ...]]) -> list[tuple[str, ...]]:
    """One head group: everything after the last block (timm files conv_head/bn2 with the last block for layer
    decay, and the classifier apart)."""
    matcher = model.group_matcher(coarse=True)
    spec = matcher.get("blocks") if isinstance(matcher, dict) else None
    if isinstance(spec, (list, tuple)):
        spec = spec[0][0]
    if not isinstance(spec, str):
        return groups
    blocks = re.compile(spec)
    with_blocks = [i for i, group in enumerate(groups) if any(blocks.match(n) for n in group)]
    if not with_blocks:
        return groups
    last = with_blocks[-1]
    body = tuple(n for n in groups[last] if blocks.match(n))
    head = tuple(n for n in groups[last] if not blocks.match(n)) + tuple(n for g in groups[last + 1:] for n in g)
    return [*groups[:last], body, head] if head else groups


def _classifier_last(groups: list[tuple[str, ...]], classifier: tuple[str, ...]) -> tuple[tuple[str, ...], ...]:
    """The classifier always sits in the last group (some matchers file it with the last block)."""
    if set(classifier) <= set(groups[-1]):
        return tuple(groups)
    rest = [tuple(n for n in g if n not in classifier) for g in groups]
    return tuple(g for g in rest if g) + (classifier,)


def _module_order(model: nn.Module, head: str) -> list[tuple[str, ...]]:
    """torchvision models: leading single modules form the stem; containers are stages, or, when one container
    holds the whole body (`features`), its children are; the rest (pool, classifier) is the head group."""
    children = [(n, m) for n, m in model.named_children() if any(True for _ in m.parameters())]
    head_root = head.split(".")[0]
    body = [(n, m) for n, m in children if n != head_root]
    containers = [(n, m) for n, m in body if isinstance(m, (nn.Sequential, nn.ModuleList))]
    if len(containers) == 1 and len(body) == 1:
        body = [(f"{body[0][0]}.{n}", m) for n, m in body[0][1].named_children() if any(True for _ in m.parameters())]
    groups: list[list[str]] = []
    for i, (prefix, module) in enumerate(body):
        names = [f"{prefix}.{n}" for n, _ in module.named_parameters()]
        leading_single = i > 0 and not isinstance(module, (nn.Sequential, nn.ModuleList)) and len(groups) == 1 \
            and not isinstance(body[i - 1][1], (nn.Sequential, nn.ModuleList))
        if leading_single:
            groups[0].extend(names)
        else:
            groups.append(names)
    seen = {n for g in groups for n in g}
    groups.append([n for n, _ in model.named_parameters() if n not in seen])
    return [tuple(g) for g in groups if g]


def mindcv_feature_prefixes(model: nn.Module) -> list[str | None] | None:
    """MindCV's `features.N` of mobilenet_v3 as timm module prefixes (None: an activation, no parameters):
    stem conv, BN, act, one entry per inverted-residual block, last conv, BN, act."""
    if type(model).__name__ != "MobileNetV3" or not hasattr(model, "blocks"):
        return None
    blocks = [f"blocks.{i}.{j}" for i, stage in enumerate(model.blocks) for j in range(len(stage))]
    last = blocks.pop()  # timm's last "block" is MindCV's final 1x1 conv + BN + activation
    return ["conv_stem", "bn1", None, *blocks, f"{last}.conv", f"{last}.bn1", None]


def compile_pattern(pattern: str) -> Callable[[str], bool]:
    """A module/parameter name matches itself and everything under it; `*?[` make a glob; `re:` a regex search."""
    if pattern.startswith("re:"):
        try:
            regex = re.compile(pattern[3:])
        except re.error as err:
            raise UserError(f"pattern {pattern!r} is not a valid regular expression: {err}") from None
        return lambda name: regex.search(name) is not None
    if GLOB_CHARS & set(pattern):
        return lambda name: fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(name, f"{pattern}.*")
    return lambda name: name == pattern or name.startswith(f"{pattern}.")


def match_names(pattern: str, names: Iterable[str], model: nn.Module | None = None, *, key: str) -> list[str]:
    """Names matched by `pattern`; a pattern that matches nothing is a UserError naming `key`."""
    names = list(names)
    if pattern in EVERYTHING:
        return names
    feature = MINDCV_FEATURE.match(pattern)
    has_features = any(n.startswith("features.") for n in names)
    prefixes = mindcv_feature_prefixes(model) if model is not None and feature and not has_features else None
    if prefixes is not None:
        index = int(feature.group(1))
        if index >= len(prefixes):
            raise UserError(f"{key}: {pattern} is past MindCV's last layer features.{len(prefixes) - 1}")
        if prefixes[index] is None:
            return []  # an activation: MindCV's loop over features.N skips it the same way
        pattern = prefixes[index] + (feature.group(2) or "")
    matches = compile_pattern(pattern)
    found = [n for n in names if matches(n)]
    if not found:
        modules = sorted({".".join(n.split(".")[:depth]) for n in names for depth in (1, 2, 3)})
        raise UserError(f"{key}: pattern {pattern!r} matches no parameter{closest_hint(pattern, modules)} "
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
                            f"{backbone} stages; use 0..{backbone} (freeze: all freezes everything)")
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
        return [Phase(1, epochs, frozenset(set(lmap.names) - set(lmap.stages[-1])), label="head group")]
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


def apply_freeze(model: nn.Module, ft: FinetuneConfig) -> set[str]:
    """Freeze what the freeze keys fix for the whole run (no phases); returns the frozen parameter names."""
    frozen = frozen_names(model, layer_map(model), ft)
    apply_phase(model, Phase(1, 1, frozenset(frozen)))
    return frozen
