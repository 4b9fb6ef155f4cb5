"""Config files: YAML with `_base_` inheritance (MMDetection/MMPretrain style) and `--cfg-options a.b=c` edits.

Raw mappings only: typing, renaming and validation of the keys happen in `tunecv.config`.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
from pathlib import Path
from typing import Any

import yaml

from tunecv.config.compat import RENAMED_KEYS, underscored
from tunecv.errors import UserError
from tunecv.finetune.strategies import drop_replaced_strategy_keys

logger = logging.getLogger(__name__)

BASE_KEY = "_base_"
DELETE_KEY = "_delete_"
_PACKAGE = Path(__file__).resolve().parents[1]


def _bundled_configs() -> Path:
    """The configs that ship with tunecv (`tunecv.configs`, package data): inside the installed package, the
    repo's configs/ for an editable install, and the repo's configs/ when tunecv runs from a checkout."""
    spec = importlib.util.find_spec("tunecv.configs")
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations))).resolve()
    return _PACKAGE.parent / "configs"


# where `--config demo.yaml` and `_base_: presets/resnet.yaml` are also looked for
BUNDLED_CONFIGS = _bundled_configs()
# keys naming input files: a config file's relative value is relative to that file (see resolve_path)
PATH_KEYS = frozenset({"data_dir", "train_list", "val_list", "image_root", "class_list", "ckpt_path"})
_TAG = re.compile(r"tag '([^']+)'")
_SHOWN_LINE = 80  # characters of the offending line a YAML error quotes


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """One YAML file: a mapping of keys (MindCV's flat style)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file {path} not found; check the --config path")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise UserError(f"config file {path} is not UTF-8 text (byte {err.object[err.start]:#04x} at offset "
                        f"{err.start}); give a YAML text file, saved as UTF-8") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise UserError(yaml_error(path, err, text)) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must hold a mapping of key: value lines")
    return canonical_keys(data, str(path))


def yaml_error(path: Path, err: yaml.YAMLError, text: str = "") -> str:
    """One line for a file safe_load refused, naming file:line:column and quoting the line; a tag
    (`!!python/object/apply:os.system`) was never run."""
    tag = _TAG.search(str(getattr(err, "problem", None)))
    if isinstance(err, yaml.constructor.ConstructorError) and tag:
        mark = err.problem_mark
        where = f" line {mark.line + 1}" if mark else ""
        return (f"config file {path}{where} has the YAML tag {tag.group(1).replace('tag:yaml.org,2002:', '!!')}; "
                "tags that build Python objects or run code are not allowed, write a plain value")
    if isinstance(err, yaml.reader.ReaderError):  # a control character: a binary file, or text pasted with one
        return (f"config file {path} is not YAML text (character #x{err.character:04x} at offset {err.position}); "
                "give a YAML text file")
    if isinstance(err, yaml.MarkedYAMLError) and err.problem_mark is not None:
        return _marked_yaml_error(path, err, text.splitlines())
    return f"config file {path} is not valid YAML: {str(err).splitlines()[0]}"


def _marked_yaml_error(path: Path, err: yaml.MarkedYAMLError, lines: list[str]) -> str:
    """`file:line:column is not valid YAML (problem): "the line"`; a problem that YAML found after the line where
    the broken part began (an unclosed `[`) names that line too, and one found at the end of the file names only
    that line."""
    mark, began = err.problem_mark, err.context_mark
    if began is not None and (mark.line >= len(lines) or not lines[mark.line].strip()):
        mark, began = began, None
    problem = err.problem or "invalid syntax"
    if err.context and began is not None and began.line < mark.line:
        problem += f", {err.context} that began on line {began.line + 1}"
    elif err.context:
        problem = f"{err.context}, {problem}"
    line = lines[mark.line].rstrip() if mark.line < len(lines) else ""
    if len(line) > _SHOWN_LINE:
        line = line[:_SHOWN_LINE] + "..."
    fix = f"fix that line or line {began.line + 1}" if began is not None and began.line < mark.line else \
        "fix that line"
    return f'config file {path}:{mark.line + 1}:{mark.column + 1} is not valid YAML ({problem}): "{line}"; {fix}'


def canonical_keys(mapping: dict[str, Any], where: str) -> dict[str, Any]:
    """Keys as ours before merging (`batch-size` as batch_size, other tools' `epochs`, `class_num` as epoch_size,
    num_classes), so the later layer wins whatever the spelling."""
    out = {}
    for key, value in mapping.items():
        name = underscored(str(key))
        if name in RENAMED_KEYS:
            logger.info("config: %s (%s) is read as %s", key, where, RENAMED_KEYS[name])
        out[RENAMED_KEYS.get(name, name)] = value
    return out


def find_config(path: str | os.PathLike) -> tuple[Path, bool]:
    """The --config file and whether it is a bundled one: the path itself when it is a file here, else the config
    tunecv ships under that name (`demo.yaml`, `configs/demo.yaml`, `presets/resnet.yaml`)."""
    given = Path(path).expanduser()
    if given.is_file():
        return given, _inside_package(given)
    parts = given.parts[1:] if given.parts[:1] == ("configs",) else given.parts
    bundled = BUNDLED_CONFIGS.joinpath(*parts) if parts and not given.is_absolute() else None
    if bundled is not None and bundled.is_file():
        logger.info("config: %s is the bundled %s", path, bundled)
        return bundled, True
    looked = str(given.resolve()) + (f" nor {bundled}" if bundled is not None else "")
    raise UserError(f"config file {path} not found (not at {looked}); check the --config path, or name a bundled "
                    f"config: {', '.join(bundled_names())}")


def bundled_names() -> list[str]:
    """The bundled configs by the names --config takes; the tutorials' seeds/ as a count."""
    names = sorted(p.relative_to(BUNDLED_CONFIGS).as_posix() for p in BUNDLED_CONFIGS.rglob("*.yaml")
                   if p.parent.name != "seeds")
    seeds = len(list((BUNDLED_CONFIGS / "seeds").glob("*.yaml")))
    return names + ([f"{seeds} more in seeds/"] if seeds else [])


def _inside_package(path: Path) -> bool:
    """A config inside the installed package (site-packages), however it was named."""
    configs = BUNDLED_CONFIGS.resolve()
    return _PACKAGE in configs.parents and configs in path.resolve().parents


def read_config_file(path: str | os.PathLike, _chain: tuple[Path, ...] = (), *, bundled: bool = False
                     ) -> dict[str, Any]:
    """A config file with its `_base_` files merged in: bases in order, then the file itself; later keys win
    and mappings merge key by key (a mapping with `_delete_: true` replaces instead). `bundled`: one of the
    configs tunecv ships, whose relative input paths (`data_dir`) are from the working directory, never from the
    package's folder."""
    path = Path(path).resolve()
    if path in _chain:
        cycle = " -> ".join(p.name for p in (*_chain, path))
        raise UserError(f"config files include each other in a cycle ({cycle}); remove one _base_ entry")
    data = read_yaml(path)
    if not bundled:
        data = resolve_paths(data, path.parent)
    bases = data.pop(BASE_KEY, None) or []
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise UserError(f"{BASE_KEY} in {path} must be a file name or a list of file names")
    merged: dict[str, Any] = {}
    for base in bases:
        base_path, base_bundled = _find_base(base, path)
        merged = merge(merged, read_config_file(base_path, (*_chain, path), bundled=bundled or base_bundled))
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


def _find_base(base: str, including: Path) -> tuple[Path, bool]:
    """A `_base_` file and whether it is bundled: beside the including file, else among the bundled configs."""
    beside = including.parent / Path(base).expanduser()
    if beside.is_file():
        return beside, _inside_package(beside)
    bundled = BUNDLED_CONFIGS / base
    if bundled.is_file():
        return bundled, True
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
        key = underscored(key)
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
