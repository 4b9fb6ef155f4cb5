"""Freezing: which parameters the freeze keys hold fixed, from the model's layer map (`tunecv.models.layer_map`).

Name patterns (`compile_pattern`, `match_names`, MindCV's `features.N`) and the freeze keys (`frozen_names`);
`tunecv.finetune.phases` turns them into epoch ranges.
"""

from __future__ import annotations

import fnmatch
import logging
import re
from collections.abc import Callable, Iterable

from torch import nn

from tunecv.config import FinetuneConfig
from tunecv.config.values import closest_hint
from tunecv.errors import UserError
from tunecv.models.layer_map import LayerMap, mindcv_feature_prefixes

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
