"""Layer map: a model's parameters in forward order, as layers (fine) and stages (coarse), stem first and the
head group last. timm's `group_matcher` gives them, so `frozen_stages`, `freeze_layers`, `gradual` and
`layer_decay` mean the same on every timm family; torchvision models fall back to their module order."""

from __future__ import annotations

import re
from dataclasses import dataclass

from timm.models import group_parameters
from torch import nn

from tunecv.models.aux_heads import aux_head_parameters
from tunecv.models.factory import classifier_names


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
    heads = classifier_names(model)
    classifier = tuple(n for n in names if any(n.startswith(f"{head}.") for head in heads))
    aux = tuple(aux_head_parameters(model))
    if hasattr(model, "group_matcher"):
        fine = _merge_head(model, _groups(group_parameters(model, model.group_matcher(coarse=False))))
        coarse = _merge_head(model, _groups(group_parameters(model, model.group_matcher(coarse=True))))
    else:
        fine = coarse = _module_order(model, heads)
    return LayerMap(_classifier_last(fine, classifier, aux), _classifier_last(coarse, classifier, aux), classifier)


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


def _classifier_last(groups: list[tuple[str, ...]], classifier: tuple[str, ...],
                     aux: tuple[str, ...] = ()) -> tuple[tuple[str, ...], ...]:
    """The classifier always sits in the last group (some matchers file it with the last block), and auxiliary
    heads (aux_factor) join it: they are heads, not stages of the body."""
    if set(classifier) <= set(groups[-1]):
        body = [tuple(n for n in g if n not in aux) for g in groups]
        return tuple(g for g in body[:-1] if g) + (body[-1] + aux,)
    rest = [tuple(n for n in g if n not in classifier and n not in aux) for g in groups]
    return tuple(g for g in rest if g) + (aux + classifier,)


def _module_order(model: nn.Module, heads: list[str]) -> list[tuple[str, ...]]:
    """torchvision models, in module order: descend into the container that holds most of the body while it is
    (nearly) the only one (`features`, `encoder.layers`, `trunk_output`); leading single layers and the model's own
    tensors (class token) form the stem, each container after them a stage, trailing single layers (the final
    norm) join the head group."""
    roots = {h.split(".")[0] for h in heads}
    stem = [n for n, _ in model.named_parameters(recurse=False)]
    elements = [(n, m) for n, m in model.named_children() if n not in roots and _size(m)]
    while True:
        containers = [e for e in elements if _is_container(e[1])]
        if not containers or len(containers) > 2:
            break
        name, big = max(containers, key=lambda e: _size(e[1]))
        children = [(f"{name}.{n}", c) for n, c in big.named_children() if _size(c)]
        if _size(big) * 2 <= sum(_size(m) for _, m in elements) or len(children) < 2:
            break
        stem += [f"{name}.{n}" for n, _ in big.named_parameters(recurse=False)]
        at = [n for n, _ in elements].index(name)
        elements = elements[:at] + children + elements[at + 1:]
    if any(_is_container(m) for _, m in elements):
        last_container = max(i for i, (_, m) in enumerate(elements) if _is_container(m))
        leading = 0
        while leading < last_container and not _is_container(elements[leading][1]):
            leading += 1
        leading = max(leading, 1)
    else:  # single layers only (alexnet's features): each is a stage
        last_container, leading = len(elements) - 1, 1
    groups = [stem + [f"{n}.{p}" for n, m in elements[:leading] for p, _ in m.named_parameters()]]
    groups += [[f"{n}.{p}" for p, _ in m.named_parameters()] for n, m in elements[leading:last_container + 1]]
    seen = {n for g in groups for n in g}
    groups.append([n for n, _ in model.named_parameters() if n not in seen])
    return [tuple(g) for g in groups if g]


def _size(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _is_container(module: nn.Module) -> bool:
    return any(_size(child) for child in module.children())


def mindcv_feature_prefixes(model: nn.Module) -> list[str | None] | None:
    """MindCV's `features.N` of mobilenet_v3 as timm module prefixes (None: an activation, no parameters):
    stem conv, BN, act, one entry per inverted-residual block, last conv, BN, act."""
    if type(model).__name__ != "MobileNetV3" or not hasattr(model, "blocks"):
        return None
    blocks = [f"blocks.{i}.{j}" for i, stage in enumerate(model.blocks) for j in range(len(stage))]
    last = blocks.pop()  # timm's last "block" is MindCV's final 1x1 conv + BN + activation
    return ["conv_stem", "bn1", None, *blocks, f"{last}.conv", f"{last}.bn1", None]
