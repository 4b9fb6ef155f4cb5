"""Parameter groups: the lr multiplier and weight decay of every trainable parameter, and the table that shows them.

One parameter's lr = lr x (first matching lr_scales / custom_keys rule) x head_lr_scale (classifier)
x layer_decay^(L-1-layer), and after an unfreeze x unfreeze_head_lr_scale x unfreeze_lr_scale^((L-1-layer)/(L-1)).
Its weight decay = weight_decay x decay_mult x norm/bias multipliers (weight_decay_filter, paramwise_cfg).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from torch import nn

from tunecv.config import FinetuneConfig
from tunecv.finetune.freezing import match_names
from tunecv.models.layer_map import LayerMap


@dataclass(frozen=True)
class Rule:
    """Parameters matching `pattern` get lr x lr_mult and weight decay x decay_mult."""

    pattern: str
    lr_mult: float = 1.0
    decay_mult: float = 1.0
    label: str = ""
    key: str = "lr_scales"  # where the rule was written, for errors
    custom: bool = False  # an MMPretrain custom key: the norm/bias multipliers do not apply (as in MMEngine)


def build_rules(ft: FinetuneConfig) -> list[Rule]:
    """lr_scales in the order written (first match wins), then MMPretrain's custom_keys as MMEngine applies them:
    substring match, longest key first."""
    rules = [Rule(pattern, lr_mult=float(mult), label=f"{pattern} x{mult:g}", key=f"lr_scales[{pattern}]")
             for pattern, mult in (ft.lr_scales or {}).items()]
    custom = (ft.paramwise_cfg or {}).get("custom_keys", {})
    for key in sorted(sorted(custom), key=len, reverse=True):
        spec = custom[key]
        label = ", ".join(f"{k} {v:g}" for k, v in spec.items())
        rules.append(Rule(f"re:{re.escape(key)}", float(spec.get("lr_mult", 1.0)), float(spec.get("decay_mult", 1.0)),
                          f"{key} ({label})", key=f"paramwise_cfg.custom_keys.{key}", custom=True))
    return rules


NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)


def _decay_factor(name: str, param: nn.Parameter, rule: Rule | None, ft: FinetuneConfig, weight_decay_filter: str,
                  norm_params: set[str], no_decay_names: set[str]) -> float:
    """Weight-decay multiplier of one parameter. With paramwise_cfg's norm_decay_mult / bias_decay_mult, MMEngine's
    rule: norm-layer parameters x norm_decay_mult, other biases x bias_decay_mult, custom keys exempt. Otherwise
    the filter (timm's rule): no decay on biases, 1-D tensors and the model's no_weight_decay() names."""
    mult = rule.decay_mult if rule else 1.0
    paramwise = ft.paramwise_cfg or {}
    if "norm_decay_mult" in paramwise or "bias_decay_mult" in paramwise:
        if rule is not None and rule.custom:
            return mult
        if name in norm_params:
            return mult * float(paramwise.get("norm_decay_mult", 1.0))
        if name.endswith(".bias"):
            return mult * float(paramwise.get("bias_decay_mult", 1.0))
        return mult
    if decay_exempt(name, param, weight_decay_filter, no_decay_names):
        return 0.0
    return mult


def decay_exempt(name: str, param: nn.Parameter, weight_decay_filter: str,
                 no_decay_names: set[str] | frozenset[str] = frozenset()) -> bool:
    """timm's filter: biases, 1-D tensors (norm weights) and `no_decay_names` get no weight decay, unless the
    filter is disable."""
    return weight_decay_filter != "disable" and (name.endswith(".bias") or param.ndim <= 1 or name in no_decay_names)


def build_param_groups(model: nn.Module, lmap: LayerMap, ft: FinetuneConfig, *, lr: float, weight_decay: float,
                       weight_decay_filter: str, discriminative: bool = False) -> list[dict[str, Any]]:
    """Optimizer param groups of the trainable parameters (requires_grad), each with `lr`, `weight_decay`,
    `lr_scale` and a `name` for the table. Frozen parameters get no group: no optimizer state for them."""
    named = dict(model.named_parameters())
    rules = build_rules(ft)
    matched = [(rule, set(match_names(rule.pattern, named, model, key=rule.key))) for rule in rules]
    no_decay_names = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    norm_params = {f"{m}.{p}" if m else p for m, module in model.named_modules() if isinstance(module, NORMS)
                   for p, _ in module.named_parameters(recurse=False)}
    layer_of = lmap.layer_index()
    last = max(len(lmap.layers) - 1, 1)
    classifier = set(lmap.classifier)
    groups: dict[tuple, dict[str, Any]] = {}
    for name, param in named.items():
        if not param.requires_grad:
            continue
        rule = next((r for r, names in matched if name in names), None)
        scale, parts = (rule.lr_mult, [rule.label]) if rule else (1.0, [])
        if name in classifier and ft.head_lr_scale != 1.0:
            scale *= ft.head_lr_scale
            parts.append(f"head x{ft.head_lr_scale:g}")
        depth = last - layer_of.get(name, last)  # 0 for the head group
        if ft.layer_decay is not None and depth:
            scale *= ft.layer_decay ** depth
        if discriminative:
            scale *= ft.unfreeze_head_lr_scale * ft.unfreeze_lr_scale ** (depth / last)
        if depth and (ft.layer_decay is not None or (discriminative and ft.unfreeze_lr_scale != 1.0)):
            parts.append(f"layer {last - depth}")
        decay = weight_decay * _decay_factor(name, param, rule, ft, weight_decay_filter, norm_params, no_decay_names)
        if decay == 0 and weight_decay > 0:
            parts.append("no decay")
        elif decay != weight_decay:
            parts.append(f"decay {decay:.3g}")
        key = (round(scale, 12), decay, tuple(parts))
        group = groups.setdefault(key, {"params": [], "param_names": [], "lr": lr * scale, "lr_scale": scale,
                                        "weight_decay": decay, "name": ", ".join(parts) or "default"})
        group["params"].append(param)
        group["param_names"].append(name)
    return sorted(groups.values(), key=lambda g: layer_of.get(g["param_names"][0], last))


def group_table(model: nn.Module, groups: list[dict[str, Any]]) -> str:
    """What the config did: one row per kind of group (per-layer groups folded into one row with their lr range),
    and one for the frozen parameters."""
    rows: dict[tuple[str, float], list] = {}
    for g in groups:
        name = re.sub(r"layer \d+", "layers", g["name"])
        lr = g.get("initial_lr", g["lr"])
        row = rows.setdefault((name, g["weight_decay"]), [0, 0, lr, lr])
        row[0] += len(g["params"])
        row[1] += sum(p.numel() for p in g["params"])
        row[2], row[3] = min(row[2], lr), max(row[3], lr)
    lines = [(n, t, p, f"{lo:.3g}" if lo == hi else f"{lo:.2g}-{hi:.2g}", f"{wd:.3g}", "no")
             for (n, wd), (t, p, lo, hi) in rows.items()]
    frozen = [p for p in model.parameters() if not p.requires_grad]
    if frozen:
        lines.append(("frozen", len(frozen), sum(p.numel() for p in frozen), "-", "-", "yes"))
    width = max(len("group"), *(len(r[0]) for r in lines))
    out = [f"  {'group':<{width}}  {'tensors':>7}  {'params':>11}  {'peak lr':>15}  {'weight_decay':>12}  frozen"]
    out += [f"  {n:<{width}}  {t:>7}  {p:>11,}  {lr:>15}  {wd:>12}  {f}" for n, t, p, lr, wd, f in lines]
    return "\n".join(out)
