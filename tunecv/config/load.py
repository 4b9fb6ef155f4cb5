"""Loading a config: MindCV-style flat keys (defaults < _base_ < YAML < --cfg-options < flags) → one validated,
frozen `Config`; must not touch devices or data.

Every flat key has exactly one home in a section dataclass. Values are typed by their key, not by how YAML read
them (PyYAML reads `lr: 4e-3` as a string). Derived values (mean/std from the model, classes, the run folder, the
lr) are `tunecv.resolve`'s.
"""

from __future__ import annotations

import logging
import os
import typing
from pathlib import Path
from typing import Any

import yaml

from tunecv.config import compat, rules
from tunecv.config.files import find_config, merge, parse_cfg_options, read_config_file
from tunecv.config.registries import REFUSED_CHOICES
from tunecv.config.schema import KEYS, SECTIONS, Config
from tunecv.config.values import closest_hint, coerce
from tunecv.errors import UserError
from tunecv.finetune.strategies import drop_replaced_strategy_keys, expand_strategy
from tunecv.utils.fileio import atomic_write_text

logger = logging.getLogger(__name__)


_TYPES = {section: typing.get_type_hints(cls) for section, cls in SECTIONS.items()}


def key_type(key: str) -> Any:
    """The value type of a key, without its Optional."""
    hint = _TYPES[KEYS[key][0]][key]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if type(None) in typing.get_args(hint) else hint


LISTED_CHOICES = 24  # more (opt: every timm optimizer) and the message names them by reference


def check_choice(key: str, value: Any, where: str) -> None:
    """A UserError when `value` is not one of `key`'s choices (`where`: the file or flag it came from)."""
    choices = KEYS[key][1].metadata["choices"]
    refused = REFUSED_CHOICES.get(key, {})
    if isinstance(value, str) and value in refused:
        raise UserError(f"{key} = {value!r} ({where}) cannot be used: {refused[value]}; choose another")
    if choices and value is not None and value not in choices:
        listed = ", ".join(choices) if len(choices) <= LISTED_CHOICES else \
            f"the {len(choices)} names docs/config.md lists for {key}"
        raise UserError(f"{key} = {value!r} ({where}) is not a choice tunecv knows{closest_hint(str(value), choices)}; "
                        f"choose one of {listed}")


def config_from_dict(layers: list[tuple[dict[str, Any], str]], training: bool = True) -> Config:
    """Build a Config from (mapping, where) layers; later layers win. `where` names the source in errors.
    `training` False (validate.py) skips the rules that only matter for a training run."""
    values: dict[str, Any] = {}
    for mapping, where in layers:
        layer: dict[str, Any] = {}
        for raw_key, raw_value in mapping.items():
            accepted = compat.accept(str(raw_key), raw_value, where, KEYS)
            if accepted is None:
                continue
            key, value = accepted
            section, spec = KEYS[key]
            if isinstance(value, str) and value.strip().lower() in spec.metadata["literals"]:
                layer[key] = value.strip().lower()
                continue
            value = compat.normalise(key, coerce(key, value, _TYPES[section][key], where))
            check_choice(key, value, where)
            layer[key] = value
        values.update(expand_strategy(layer))
    cfg = _build(values)
    rules.check(cfg, training)
    return cfg


def _build(values: dict[str, Any]) -> Config:
    if values.get("data_dir"):
        values["data_dir"] = str(Path(values["data_dir"]).expanduser())
    sections = {name: cls(**{k: v for k, v in values.items() if KEYS[k][0] == name}) for name, cls in SECTIONS.items()}
    return Config(**sections)


def mapping_keys() -> set[str]:
    return {key for key in KEYS if typing.get_origin(key_type(key)) is dict}


def load_config(path: str | os.PathLike | None, overrides: dict[str, Any] | None = None,
                cfg_options: list[str] | None = None, *, base_layers: tuple[tuple[dict[str, Any], str], ...] = (),
                training: bool = True) -> Config:
    """Defaults < `base_layers` (a checkpoint's config) < the YAML file (with its `_base_` files, edited by
    `cfg_options`) < command-line flags → a validated Config."""
    layers: list[tuple[dict[str, Any], str]] = list(base_layers)
    file_values: dict[str, Any] = {}
    if path:
        found, bundled = find_config(path)
        file_values = read_config_file(found, bundled=bundled)
    if cfg_options:
        edits = parse_cfg_options(cfg_options, mapping_keys())
        file_values = merge(drop_replaced_strategy_keys(file_values, edits), edits)
    if file_values:
        where = f"{path} + --cfg-options" if path and cfg_options else str(path) if path else "--cfg-options"
        layers.append((file_values, where))
    layers.append((overrides or {}, "command line"))
    return config_from_dict(layers, training)


def to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(cfg.to_flat(), sort_keys=False)


def save_config(cfg: Config, directory: str | os.PathLike) -> Path:
    """Write the resolved config as config.yaml in `directory` (atomically)."""
    target = Path(directory) / "config.yaml"
    atomic_write_text(target, to_yaml(cfg))
    return target
