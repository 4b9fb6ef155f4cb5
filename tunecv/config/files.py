"""Config files: YAML with `_base_` inheritance (MMDetection/MMPretrain style) and `--cfg-options a.b=c` edits.

Raw mappings only: typing, renaming and validation of the keys happen in `tunecv.config`.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

import yaml

from tunecv.config.compat import RENAMED_KEYS
from tunecv.errors import UserError
from tunecv.finetune.strategies import drop_replaced_strategy_keys

logger = logging.getLogger(__name__)

BASE_KEY = "_base_"
DELETE_KEY = "_delete_"
# where `_base_: presets/resnet.yaml` is also looked for when it is not beside the including file: the repo's
# configs/, which `pip install .` puts inside the package
_PACKAGE = Path(__file__).resolve().parents[1]
BUNDLED_CONFIGS = next((p for p in (_PACKAGE / "configs", _PACKAGE.parent / "configs") if p.is_dir()),
                       _PACKAGE.parent / "configs")
# keys naming input files: a config file's relative value is relative to that file (see resolve_path)
PATH_KEYS = frozenset({"data_dir", "train_list", "val_list", "image_root", "class_list", "ckpt_path"})
_TAG = re.compile(r"tag '([^']+)'")


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """One YAML file: a mapping of keys (MindCV's flat style)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file {path} not found; check the --config path")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise UserError(yaml_error(path, err)) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must hold a mapping of key: value lines")
    return canonical_keys(data, str(path))


def yaml_error(path: Path, err: yaml.YAMLError) -> str:
    """One line for a file safe_load refused; a tag (`!!python/object/apply:os.system`) was never run."""
    tag = _TAG.search(str(getattr(err, "problem", None)))
    if isinstance(err, yaml.constructor.ConstructorError) and tag:
        mark = err.problem_mark
        where = f" line {mark.line + 1}" if mark else ""
        return (f"config file {path}{where} has the YAML tag {tag.group(1).replace('tag:yaml.org,2002:', '!!')}; "
                "tags that build Python objects or run code are not allowed, write a plain value")
    return f"config file {path} is not valid YAML: {str(err).splitlines()[0]}"


def canonical_keys(mapping: dict[str, Any], where: str) -> dict[str, Any]:
    """Other tools' names (`epochs`, `class_num`) as ours before merging, so the later layer wins whatever the
    spelling."""
    for key in mapping:
        if key in RENAMED_KEYS:
            logger.info("config: %s (%s) is read as %s", key, where, RENAMED_KEYS[key])
    return {RENAMED_KEYS.get(str(key), key): value for key, value in mapping.items()}


def read_config_file(path: str | os.PathLike, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A config file with its `_base_` files merged in: bases in order, then the file itself; later keys win
    and mappings merge key by key (a mapping with `_delete_: true` replaces instead)."""
    path = Path(path).resolve()
    if path in _chain:
        cycle = " -> ".join(p.name for p in (*_chain, path))
        raise UserError(f"config files include each other in a cycle ({cycle}); remove one _base_ entry")
    data = resolve_paths(read_yaml(path), path.parent)
    bases = data.pop(BASE_KEY, None) or []
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise UserError(f"{BASE_KEY} in {path} must be a file name or a list of file names")
    merged: dict[str, Any] = {}
    for base in bases:
        merged = merge(merged, read_config_file(_find_base(base, path), (*_chain, path)))
    return merge(drop_replaced_strategy_keys(merged, data), data)


# image folders are usually inside data_dir (Cityscapes' leftImg8bit): found neither beside the file nor from the
# working directory, the path stays relative, for data_dir (which may come from the command line) to hold it
UNDER_DATA_DIR_KEYS = frozenset({"image_root"})


def resolve_paths(values: dict[str, Any], folder: Path) -> dict[str, Any]:
    """The input-file keys of one config file's `values`, relative to `folder` (the file's own)."""
    resolved = {}
    for key, value in values.items():
        if key in UNDER_DATA_DIR_KEYS and isinstance(value, str) and value.strip() \
                and not Path(value).expanduser().is_absolute() and not (folder / value).exists() \
                and not Path(value).exists():
            resolved[key] = value
        else:
            resolved[key] = resolve_path(value, folder) if key in PATH_KEYS else value
    return resolved


def resolve_path(value: Any, folder: Path) -> Any:
    """A relative path from a config file in `folder`: beside the file when it is there, else from the working
    directory when it is there (configs written to run from the repo root), else beside the file (so the error
    raised later names the path the file meant). Absolute paths, `~`, empty values and non-strings pass."""
    if not isinstance(value, str) or not value.strip():
        return value
    path = Path(value).expanduser()
    if path.is_absolute():
        return str(path)
    beside = folder / path
    return str(path) if path.exists() and not beside.exists() else str(beside)


def _find_base(base: str, including: Path) -> Path:
    beside = including.parent / Path(base).expanduser()
    if beside.is_file():
        return beside
    bundled = BUNDLED_CONFIGS / base
    if bundled.is_file():
        return bundled
    raise UserError(f"{BASE_KEY} file {base} (in {including}) not found beside it nor in {BUNDLED_CONFIGS}")


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """`override` on top of `base`; nested mappings merge unless the override's carries `_delete_: true`."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict):
            replace = value.get(DELETE_KEY)
            inner = {k: v for k, v in value.items() if k != DELETE_KEY}
            prior = out.get(key)
            # merging into {} still applies (and strips) every nested _delete_
            value = merge(prior if isinstance(prior, dict) and not replace else {}, inner)
        out[key] = value
    return out


def parse_cfg_options(options: list[str], mapping_keys: set[str]) -> dict[str, Any]:
    """MMPretrain's `--cfg-options lr=0.01 lr_scales.classifier=1.2 milestones=[3,6]` → a mapping to merge.

    After a mapping key (`mapping_keys`), the rest of the dotted path is one entry (parameter-name patterns have
    dots), except under paramwise_cfg.custom_keys, whose last part is the field (lr_mult, decay_mult)."""
    out: dict[str, Any] = {}
    for option in options:
        path, eq, text = option.partition("=")
        if not eq or not path:
            raise UserError(f"--cfg-options takes key=value pairs, got {option!r}")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            value = text
        key, _, rest = path.partition(".")
        key = RENAMED_KEYS.get(key, key)
        if not rest:
            out[key] = value
        elif key not in mapping_keys:
            raise UserError(f"--cfg-options {path}: {key} is not a mapping key; write {key}=VALUE")
        elif key == "paramwise_cfg" and rest.startswith("custom_keys.") and rest.count(".") >= 2:
            name, _, field = rest.removeprefix("custom_keys.").rpartition(".")
            out = merge(out, {key: {"custom_keys": {name: {field: value}}}})
        elif key == "paramwise_cfg":
            out = merge(out, {key: _nested(rest.split("."), value)})
        else:
            out = merge(out, {key: {rest: value}})
    return out


def _nested(parts: list[str], value: Any) -> dict[str, Any]:
    return {parts[0]: value} if len(parts) == 1 else {parts[0]: _nested(parts[1:], value)}
