"""The search space: `key=a,b,c` (choices), `key=lo:hi` (a uniform range), `key=log:lo:hi` (a log-scaled range),
one `Param` per config key. Pure text work: no Optuna, no torch; the config package names and types the keys.

Each trial's config is built by `load_config` with the sampled values as command-line overrides, so every rule a
flag meets applies to a searched value too.
"""

from __future__ import annotations

import math
import random
import re
import typing
from dataclasses import dataclass
from typing import Any

from tunecv.config import KEYS, SECTIONS, check_choice, key_type
from tunecv.config.compat import RENAMED_KEYS, accept, normalise, underscored
from tunecv.config.values import coerce, type_name
from tunecv.errors import UserError

SYNTAX = "key=a,b,c (choices), key=lo:hi (a range) or key=log:lo:hi (a log-scaled range)"
# keys a trial cannot take from the search: the sweep sets them, or they belong to one run
NOT_SEARCHABLE = {
    "ckpt_save_dir": "each trial's run folder is <ckpt_save_dir>/trial_NNN",
    "resume": "a stopped sweep goes on when its command runs again",
    "resume_force": "a stopped sweep goes on when its command runs again",
    "overwrite": "each trial gets a new run folder",
    "distribute": "each trial runs in one process (start one sweep process per GPU instead)",
}
_INTEGER = re.compile(r"[+-]?\d+")


@dataclass(frozen=True)
class Param:
    """One searched key: `choices` (typed as the key), or a `low`..`high` range of `kind` int or float."""

    key: str
    kind: str  # "choice", "int" or "float"
    choices: tuple[Any, ...] = ()
    low: float = 0.0
    high: float = 0.0
    log: bool = False

    def spec(self) -> str:
        """The canonical text (what the study records and the console shows): `a,b`, `lo:hi`, `log:lo:hi`."""
        if self.kind == "choice":
            return ",".join(repr(choice) if isinstance(choice, float) else format_value(choice)
                            for choice in self.choices)
        return f"{'log:' if self.log else ''}{self.low}:{self.high}"


def parse_space(specs: list[str]) -> dict[str, Param]:
    """`--search` arguments → {key: Param}, in the order given; UserError for bad syntax or a key given twice."""
    space: dict[str, Param] = {}
    given: dict[str, str] = {}
    for spec in specs:
        param = parse_param(spec)
        if param.key in space:
            raise UserError(f"{param.key} is searched twice (--search {given[param.key]} and {spec}); give it once")
        space[param.key], given[param.key] = param, spec
    if not space:
        raise UserError(f"--search names no key; give at least one, as {SYNTAX}")
    return space


def parse_param(spec: str) -> Param:
    """One `key=values` argument."""
    raw_key, eq, text = spec.partition("=")
    if not eq or not raw_key.strip():
        raise UserError(f"--search {spec!r} is not key=values; write {SYNTAX}")
    key, text = search_key(raw_key.strip()), text.strip()
    if not text:
        raise UserError(f"--search {spec} gives {key} no values; write {SYNTAX}")
    if "," in text:
        return Param(key, "choice", _choices(key, text, spec))
    if text.lower().startswith("log:"):
        return _range(key, text[4:], spec, log=True)
    if ":" in text and key_type(key) in (int, float):
        return _range(key, text, spec, log=False)
    return Param(key, "choice", (typed_value(key, text, spec),))  # one value (`strategy=freeze:2`)


def search_key(raw: str) -> str:
    """The config key `raw` names (hyphens or underscores, other tools' names), as a flag would; UserError with
    the closest key for an unknown one."""
    accepted = accept(raw, None, "--search", KEYS)
    if accepted is None:  # a MindCV system key tunecv ignores
        raise UserError(f"{underscored(raw)} is a MindCV key tunecv ignores, so searching it changes nothing; "
                        "search another key")
    key = accepted[0]
    if key in NOT_SEARCHABLE:
        raise UserError(f"{key} cannot be searched ({NOT_SEARCHABLE[key]}); give it as a flag, or search another key")
    return key


def canonical_key(raw: str) -> str:
    """A flag's key as the config reads it (`batch-size` → batch_size, `class_num` → num_classes), without
    checking it."""
    key = underscored(raw)
    return RENAMED_KEYS.get(key, key)


def typed_value(key: str, text: str, spec: str) -> Any:
    """A choice's text as the key's type (`true` → True for a boolean key), checked against the key's choices;
    a list or mapping value stays text (Optuna's choices are plain values; the config reads the text)."""
    section, field = KEYS[key]
    if text.strip().lower() in field.metadata["literals"]:
        return text.strip().lower()
    hint = typing.get_type_hints(SECTIONS[section])[key]
    value = normalise(key, coerce(key, text, hint, f"--search {spec}"))
    check_choice(key, value, f"--search {spec}")
    return text.strip() if isinstance(value, (tuple, list, dict)) else value


def _choices(key: str, text: str, spec: str) -> tuple[Any, ...]:
    items = [item.strip() for item in text.split(",")]
    if "" in items:
        raise UserError(f"--search {spec} has an empty choice; remove the extra comma")
    values = [typed_value(key, item, spec) for item in items]
    for i, value in enumerate(values):
        if value in values[:i]:
            raise UserError(f"--search {spec} lists {items[i]!r} twice; give each choice once")
    return tuple(values)


def _range(key: str, text: str, spec: str, log: bool) -> Param:
    base = key_type(key)
    if base not in (int, float):
        raise UserError(f"--search {spec}: {key} is a {type_name(base)}, not a number, so it has no range; "
                        f"list its choices ({key}=a,b,c)")
    ends = [end.strip() for end in text.split(":")]
    if len(ends) != 2 or "" in ends:
        raise UserError(f"--search {spec} is not a range; write {key}=lo:hi or {key}=log:lo:hi "
                        f"(e.g. {key}={'log:1e-4:1e-1' if base is float else '1:8'})")
    low, high = (_number(end, spec) for end in ends)
    integer = base is int and all(_INTEGER.fullmatch(end) for end in ends)
    if base is int and not integer:
        raise UserError(f"--search {spec}: {key} takes integers; give integer ends ({key}="
                        f"{'log:' if log else ''}{math.floor(low)}:{math.ceil(high)})")
    if low >= high:
        fix = f"write {key}={'log:' if log else ''}{ends[1]}:{ends[0]}" if low > high else "give two different ends"
        raise UserError(f"--search {spec}: the range's low end must be below its high end; {fix}")
    if log and low <= 0:
        raise UserError(f"--search {spec}: a log-scaled range needs ends above 0; start it at a small positive "
                        f"number ({key}=log:{high / 1000:g}:{ends[1]}) or drop log:")
    if integer:
        return Param(key, "int", low=int(low), high=int(high), log=log)
    return Param(key, "float", low=float(low), high=float(high), log=log)


def _number(text: str, spec: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise UserError(f"--search {spec}: {text!r} is not a number; give the range two numbers (lo:hi)")
    return value


def check_not_flags(space: dict[str, Param], flags: list[str]) -> None:
    """A key is a flag or searched, not both (the search would overwrite the flag)."""
    for flag in flags:
        key = canonical_key(flag)
        if key in space:
            raise UserError(f"{key} is both given (--{flag}) and searched (--search {key}={space[key].spec()}); "
                            "drop one of them")


def corners(space: dict[str, Param], limit: int) -> list[dict[str, Any]]:
    """The combinations of each key's choices and range ends, in order: all of them, or `limit` of them drawn with
    a fixed seed when there are more (a search over many keys)."""
    axes = [(key, param.choices or (param.low, param.high)) for key, param in space.items()]
    total = math.prod(len(values) for _, values in axes)
    picks = range(total) if total <= limit else sorted(random.Random(0).sample(range(total), limit))
    combos = []
    for index in picks:  # the index's digits in the mixed radix of the axes' sizes, the last key fastest
        digits = []
        for _, values in reversed(axes):
            index, digit = divmod(index, len(values))
            digits.append(digit)
        combos.append({key: values[digit] for (key, values), digit in zip(axes, reversed(digits))})
    return combos


def format_value(value: Any) -> str:
    """A value as the command line writes it: true/false, none, 0.0031 (three significant digits for a float)."""
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "none"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def describe(params: dict[str, Any]) -> str:
    """`lr=0.0031 strategy=full` for a trial's values."""
    return " ".join(f"{key}={format_value(value)}" for key, value in params.items())
