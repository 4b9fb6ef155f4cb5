"""Config values typed by their key: text from YAML or the command line → int, float, bool, str or a tuple."""

from __future__ import annotations

import difflib
import math
import re
import typing
from collections.abc import Iterable
from typing import Any

import yaml

from tunecv.errors import UserError

NULLS = ("", "none", "null", "~")


def closest_names(name: str, options: Iterable[str]) -> list[str]:
    return difflib.get_close_matches(name, list(options), n=3, cutoff=0.5)


def closest_hint(name: str, options: Iterable[str]) -> str:
    matches = closest_names(name, options)
    return f"; did you mean {' or '.join(repr(m) for m in matches)}?" if matches else ""


def coerce(key: str, value: Any, hint: Any, where: str) -> Any:
    """`value` as the type `hint` (`X | None` allows null), or a UserError naming the key and its source."""
    args = typing.get_args(hint)
    optional = type(None) in args
    text = value.strip().lower() if isinstance(value, str) else None
    if optional and (value is None or text in NULLS):
        return None
    base = next(a for a in args if a is not type(None)) if optional else hint
    if value is None or text == "":
        raise UserError(f"{key} ({where}) cannot be empty; give {_with_article(type_name(base))}")
    try:
        return _convert(value, base)
    except (TypeError, ValueError, yaml.YAMLError):
        raise UserError(f"{key} = {value!r} ({where}) is not a valid {type_name(base)}; give {key} "
                        f"{_with_article(type_name(base))}") from None


def _convert(value: Any, base: Any) -> Any:
    if base is Any:
        return value
    if typing.get_origin(base) is dict:
        key_type, value_type = typing.get_args(base)
        if isinstance(value, str):
            text = value
            value = yaml.safe_load(text)
            if _glued_colon(value):
                # `{classifier:1.2}` typed on a command line: YAML wants a space after the colon
                value = yaml.safe_load(re.sub(r":(?=[-\d.\[])", ": ", text))
        if not isinstance(value, dict):
            raise ValueError(value)
        return {_convert(k, key_type): _convert(v, value_type) for k, v in value.items()}
    if typing.get_origin(base) is tuple:
        item = typing.get_args(base)[0]
        if item is str and isinstance(value, str) and not value.strip().startswith("["):
            return (value.strip(),)  # one name pattern: its commas, brackets and stars are its own
        if isinstance(value, str):
            value = yaml.safe_load(value if value.strip().startswith("[") else f"[{value}]")
        if not isinstance(value, (list, tuple)):
            value = [value]
        return tuple(_convert(v, item) for v in value)
    if base is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("true", "yes", "1", "on"):
            return True
        if text in ("false", "no", "0", "off"):
            return False
        raise ValueError(value)
    if base is int:
        number = float(value) if isinstance(value, str) else value
        if isinstance(number, bool) or not float(number).is_integer():
            raise ValueError(value)
        return int(number)
    if base is float:
        if isinstance(value, bool) or not math.isfinite(float(value)):
            raise ValueError(value)
        return float(value)
    if base is str:
        if isinstance(value, (dict, list)):
            raise ValueError(value)
        return str(value)
    raise TypeError(base)


def _glued_colon(value: Any) -> bool:
    """A mapping (at any depth) with a key like `lr_mult:0.1` and no value: YAML read `a:b` without its space."""
    return isinstance(value, dict) and any((v is None and ":" in str(k)) or _glued_colon(v) for k, v in value.items())


def _with_article(name: str) -> str:
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def type_name(base: Any) -> str:
    if typing.get_origin(base) is dict:
        return f"mapping of {type_name(typing.get_args(base)[0])} to {type_name(typing.get_args(base)[1])}" \
            if typing.get_args(base)[1] is not Any else "mapping"
    if typing.get_origin(base) is tuple:
        return f"list of {typing.get_args(base)[0].__name__}"
    return {bool: "boolean (true/false)", int: "integer", float: "number", str: "string", Any: "value"}[base]
