"""Fine-tuning strategies: the registry of `strategy` names and the detailed keys each stands for.

Pure data and string work, no torch: the config stage expands `strategy` with it when it reads each layer, and
`tunecv.finetune.phases` asks it whether the run unfreezes gradually. A new strategy is one entry here (and, if it
schedules unfreezing, a branch in `phases.plan_phases`).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

from tunecv.errors import UserError

# the keys `strategy` stands for; each strategy sets all of them, so a later layer's strategy replaces an earlier one
STRATEGY_KEYS: dict[str, Any] = {"freeze": "none", "frozen_stages": -1, "freeze_epochs": 0, "unfreeze_lr_scale": 1.0,
                                 "unfreeze_head_lr_scale": 1.0, "unfreeze_bn": "train"}
# after the unfreeze the layers keep the BatchNorm statistics the head was fitted on, and train at fastai fine_tune's
# slice(lr/2/100, lr/2): in eval mode BatchNorm no longer absorbs a large step (measured in docs/strategies.md)
UNFROZEN_SAFELY: dict[str, Any] = {"unfreeze_lr_scale": 0.01, "unfreeze_head_lr_scale": 0.5, "unfreeze_bn": "eval"}


@dataclass(frozen=True)
class Strategy:
    """`keys`: what the strategy sets besides STRATEGY_KEYS' defaults; `gradual`: stages unfreeze top-down during
    the run (ULMFiT), which no key expresses."""

    keys: dict[str, Any] = field(default_factory=dict)
    gradual: bool = False


FREEZE_N = "freeze:"  # freeze:N freezes the stem and the first N stages (MMPretrain's frozen_stages)
STRATEGIES: dict[str, Strategy] = {
    "full": Strategy(),
    "linear_probe": Strategy({"freeze": "all"}),
    f"{FREEZE_N}N": Strategy(),  # listed for the names; lookup builds each N's entry
    "lp_ft": Strategy({"freeze_epochs": 1, **UNFROZEN_SAFELY}),
    "gradual": Strategy({**UNFROZEN_SAFELY}, gradual=True),
    "auto": Strategy(),  # measured and replaced by one of the above when the run resolves (tunecv.finetune.auto)
}
AUTO = "auto"


def canonical(name: str) -> str:
    return str(name).replace(" ", "").lower()


def lookup(name: str) -> Strategy:
    """The registry entry of a (canonical) strategy name; freeze:N is built from its number."""
    if name.startswith(FREEZE_N) and name[len(FREEZE_N):].isdigit():
        return Strategy({"frozen_stages": int(name[len(FREEZE_N):])})
    if name not in STRATEGIES or name == f"{FREEZE_N}N":
        close = difflib.get_close_matches(name, [n for n in STRATEGIES if n != f"{FREEZE_N}N"], n=2, cutoff=0.5)
        hint = f"; did you mean {' or '.join(repr(m) for m in close)}?" if close else \
            f"; give one of them, with a number for N ({FREEZE_N}5)"
        raise UserError(f"strategy {name!r} is not one of {', '.join(STRATEGIES)}{hint}")
    return STRATEGIES[name]


def strategy_keys(name: str) -> dict[str, Any]:
    """The detailed keys a strategy stands for."""
    return {**STRATEGY_KEYS, **lookup(name).keys}


def is_gradual(name: str) -> bool:
    return lookup(name).gradual


def expand_strategy(layer: dict[str, Any]) -> dict[str, Any]:
    """A layer that sets `strategy` also sets the keys it stands for, where that same layer does not:
    later layers (the command line over the file) still win, earlier ones are replaced."""
    if "strategy" not in layer:
        return layer
    name = canonical(layer["strategy"])
    return {**strategy_keys(name), **layer, "strategy": name}


def drop_replaced_strategy_keys(earlier: dict[str, Any], later: dict[str, Any]) -> dict[str, Any]:
    """A later `strategy` replaces the keys it stands for (STRATEGY_KEYS) from earlier files, as a strategy flag
    does; keys written beside it still win."""
    if "strategy" not in later:
        return earlier
    return {k: v for k, v in earlier.items() if k not in STRATEGY_KEYS or k in later}


def implied_by(name: str) -> str:
    """` (strategy X sets a: 1)` for error messages about keys the strategy set, or ''."""
    implied = {k: v for k, v in strategy_keys(name).items() if v != STRATEGY_KEYS[k]}
    return f" (strategy {name} sets {', '.join(f'{k}: {v}' for k, v in implied.items())})" if implied else ""
