"""Config: MindCV-style flat keys (YAML < CLI) → one validated, frozen `Config`; must not touch devices or data.

Every flat key has exactly one home in a section dataclass. Values are typed by their key, not by how YAML read
them (PyYAML reads `lr: 4e-3` as a string). Derived values (mean/std/interpolation/crop_pct) come from the model name.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import typing
from pathlib import Path
from typing import Any

import yaml

from tunecv.config import compat
from tunecv.config.files import drop_replaced_strategy_keys, merge, parse_cfg_options, read_config_file
from tunecv.config.schema import (
    SECTIONS,
    STRATEGY_KEYS,
    Config,
    DataConfig,
    FinetuneConfig,
    LoaderConfig,
    ModelConfig,
    OptimConfig,
    SchedConfig,
    TrainConfig,
)
from tunecv.config.values import closest_hint, coerce
from tunecv.detection.settings import check_task_keys, resolve_detection
from tunecv.errors import TENSORBOARD_MISSING, UserError
from tunecv.finetune.param_groups import check_paramwise_cfg
from tunecv.models import factory as models
from tunecv.utils.fileio import atomic_write_text

__all__ = ["Config", "DataConfig", "LoaderConfig", "ModelConfig", "FinetuneConfig", "OptimConfig", "SchedConfig",
           "TrainConfig", "SECTIONS", "UserError", "load_config", "config_from_dict", "save_config", "KEYS"]

logger = logging.getLogger(__name__)


# key → (section name, field)
KEYS: dict[str, tuple[str, dataclasses.Field]] = {
    f.name: (section, f) for section, cls in SECTIONS.items() for f in dataclasses.fields(cls)}
_TYPES = {section: typing.get_type_hints(cls) for section, cls in SECTIONS.items()}


def key_type(key: str) -> Any:
    """The value type of a key, without its Optional."""
    hint = _TYPES[KEYS[key][0]][key]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if type(None) in typing.get_args(hint) else hint


def _validate(key: str, value: Any, where: str) -> None:
    choices = KEYS[key][1].metadata["choices"]
    if choices and value is not None and value not in choices:
        raise UserError(f"{key} = {value!r} ({where}) is not one of {', '.join(choices)}"
                        f"{closest_hint(str(value), choices)}")


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
            _validate(key, value, where)
            layer[key] = value
        values.update(expand_strategy(layer))
    return _resolve(_build(values), training)


def _build(values: dict[str, Any]) -> Config:
    sections = {name: cls(**{k: v for k, v in values.items() if KEYS[k][0] == name}) for name, cls in SECTIONS.items()}
    return Config(**sections)


# key: (lowest, highest) allowed, inclusive; None is open-ended.
RANGES: dict[str, tuple[float | None, float | None]] = {
    "batch_size": (1, None), "epoch_size": (1, None), "val_interval": (1, None), "log_interval": (1, None),
    "gradient_accumulation_steps": (1, None), "image_resize": (8, None), "num_cycles": (1, None),
    "num_parallel_workers": (0, None), "ckpt_save_interval": (1, None), "keep_checkpoint_max": (0, None),
    "num_classes": (1, None), "val_fraction": (0, 0.9), "hflip": (0, 1), "vflip": (0, 1), "re_prob": (0, 1),
    "crop_pct": (0.05, 1), "feature_views": (0, None), "cache_ram_gb": (0, None),
    "mixup": (0, None), "cutmix": (0, None), "cutmix_prob": (0, 1), "drop_rate": (0, 0.99),
    "drop_path_rate": (0, 0.99), "lr": (1e-12, None), "momentum": (0, 1), "weight_decay": (0, None),
    "min_lr": (0, None), "warmup_epochs": (0, None), "warmup_factor": (0, 1), "decay_epochs": (0, None),
    "decay_rate": (0, None), "cycle_decay": (0, None), "label_smoothing": (0, 0.99), "clip_value": (1e-12, None),
    "ema_decay": (0, 1), "frozen_stages": (-1, None), "freeze_layers": (0, None), "head_lr_scale": (0, None),
    "layer_decay": (1e-6, 1), "freeze_epochs": (0, None), "unfreeze_lr_scale": (1e-6, 1), "lr_find_steps": (5, None),
    "warmup_iters": (0, None), "max_size": (32, None), "trainable_backbone_layers": (0, None),
}


def _check_ranges(cfg: Config) -> None:
    for key, (low, high) in RANGES.items():
        value = getattr(getattr(cfg, KEYS[key][0]), key)
        if value is None or isinstance(value, str):
            continue
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f"between {low:g} and {high:g}" if high is not None else f"at least {low:g}"
            raise UserError(f"{key} must be {bounds}, got {value}")


def _resolve_data(data: DataConfig, model: ModelConfig) -> DataConfig:
    """mean/std/interpolation/crop_pct from the model when not given; MindCV's 0-255 mean/std rescaled."""
    defaults = models.data_defaults(model.model)
    mean, std = data.mean or defaults["mean"], data.std or defaults["std"]
    if max(mean) > 1.0:  # MindCV writes mean/std on the 0-255 scale
        mean = tuple(m / 255.0 for m in mean)
    if max(std) > 1.0:
        std = tuple(s / 255.0 for s in std)
    if model.in_channels == 1:  # grayscale input: one value, the average of the model's RGB ones
        mean, std = mean if data.mean else (sum(mean) / len(mean),), std if data.std else (sum(std) / len(std),)
    if len(mean) != model.in_channels or len(std) != model.in_channels:
        raise UserError(f"mean and std need {model.in_channels} values (in_channels), got {mean} and {std}")
    fixed = models.fixed_input_size(model.model)
    if fixed is not None and data.image_resize != fixed:
        raise UserError(f"model {model.model} takes {fixed} px inputs only; set image_resize {fixed}")
    return dataclasses.replace(
        data, data_dir=str(Path(data.data_dir).expanduser()) if data.data_dir else None,
        mean=tuple(round(m, 6) for m in mean), std=tuple(round(s, 6) for s in std),
        interpolation=data.interpolation or defaults["interpolation"], crop_pct=data.crop_pct or defaults["crop_pct"])


def _resolve(cfg: Config, training: bool = True) -> Config:
    """Fill derived values and check the rules that span keys."""
    _check_ranges(cfg)
    check_task_keys(cfg)
    if cfg.sched.warmup_iters is not None and cfg.sched.warmup_epochs:
        raise UserError("warmup_iters and warmup_epochs both set the warm-up length; set one of them")
    if cfg.train.log_tensorboard and training:
        _check_tensorboard()
    if cfg.model.task == "detection":
        return resolve_detection(cfg)
    data = _resolve_data(cfg.data, cfg.model)
    if data.dataset != "digits" and not data.data_dir and not data.train_list:
        raise UserError("data_dir is not set; pass --data_dir DIR (DIR/<train_split>/<class>/*.jpg)")
    if data.auto_augment:
        compat.check_auto_augment(data.auto_augment)
    if data.color_jitter is not None and len(data.color_jitter) not in (1, 3, 4):
        raise UserError("color_jitter takes one number or 3-4 (brightness, contrast, saturation[, hue])")
    if len(data.scale) != 2 or len(data.ratio) != 2:
        raise UserError("scale and ratio take two numbers each, e.g. scale: [0.08, 1.0]")
    if (cfg.loader.mixup > 0 or cfg.loader.cutmix > 0) and cfg.loader.batch_size % 2:
        raise UserError(f"mixup/cutmix need an even batch_size, got {cfg.loader.batch_size}")
    if cfg.train.class_weights == "auto" and (cfg.loader.mixup > 0 or cfg.loader.cutmix > 0 or cfg.train.loss != "ce"):
        raise UserError("class_weights: auto works with loss ce without mixup/cutmix; use sampler: balanced instead")
    if cfg.optim.use_nesterov and cfg.optim.opt in ("sgd", "momentum") and cfg.optim.momentum <= 0:
        raise UserError("use_nesterov needs momentum > 0")
    if cfg.model.ckpt_prefix and not cfg.model.ckpt_path:
        raise UserError("ckpt_prefix is set but ckpt_path is not; give the checkpoint to load the prefix from")
    if training:
        _check_finetune(cfg)
        _check_caches(cfg)
    return dataclasses.replace(cfg, data=data)


def _check_tensorboard() -> None:
    """Before any work, on every process of a distributed run: the missing package is one line, not a failure
    after the data and model are prepared."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        raise UserError(TENSORBOARD_MISSING) from None


def _check_caches(cfg: Config) -> None:
    """The cache and no_aug keys that would have no effect in this combination."""
    data, ft = cfg.data, cfg.finetune
    if data.no_aug and (data.auto_augment or data.re_prob > 0):
        raise UserError("no_aug trains on the evaluation transform and flips only; remove auto_augment/re_prob or "
                        "set no_aug: false")
    if ft.feature_views and (ft.cache_features != "true" or data.no_aug):
        raise UserError("feature_views counts the augmented views of cache_features: true with random augmentation "
                        "(no_aug: false); remove it, or set cache_features: true")
    if data.cache_ram_gb is not None and data.cache_images != "auto":
        raise UserError(f"cache_ram_gb is the RAM budget of cache_images: auto, not {data.cache_images}; remove it")
    if data.cache_dir is not None and data.cache_images not in ("auto", "disk"):
        raise UserError(f"cache_dir holds disk caches; cache_images {data.cache_images} writes none; remove it")


STRATEGY = re.compile(r"^(full|linear_probe|lp_ft|gradual|freeze:(\d+))$")


def strategy_keys(strategy: str) -> dict[str, Any]:
    """The detailed keys a `strategy` stands for."""
    match = STRATEGY.match(strategy)
    if not match:
        raise UserError(f"strategy {strategy!r} is not one of full, linear_probe, freeze:N, lp_ft, gradual")
    implied = {"linear_probe": {"freeze": "all"}, "lp_ft": {"freeze_epochs": 1}}.get(strategy, {})
    if match.group(2) is not None:
        implied = {"frozen_stages": int(match.group(2))}
    return {**STRATEGY_KEYS, **implied}


def expand_strategy(layer: dict[str, Any]) -> dict[str, Any]:
    """A layer that sets `strategy` also sets the keys it stands for, where that same layer does not:
    later layers (the command line over the file) still win, earlier ones are replaced."""
    if "strategy" not in layer:
        return layer
    strategy = str(layer["strategy"]).replace(" ", "").lower()
    return {**strategy_keys(strategy), **layer, "strategy": strategy}


def _check_finetune(cfg: Config) -> None:
    ft, epochs = cfg.finetune, cfg.train.epoch_size
    implied = {k: v for k, v in strategy_keys(ft.strategy).items() if v != STRATEGY_KEYS[k]}
    via = f" (strategy {ft.strategy} sets {', '.join(f'{k}: {v}' for k, v in implied.items())})" if implied else ""
    if ft.freeze_epochs and ft.freeze_epochs >= epochs:
        raise UserError(f"freeze_epochs {ft.freeze_epochs} leaves no epoch to train unfrozen in epoch_size "
                        f"{epochs}; lower freeze_epochs or raise epoch_size{via}")
    unfreezing = ft.freeze_epochs or ft.unfreeze_schedule or ft.strategy == "gradual"
    if unfreezing and ft.freeze != "none":
        what = f"freeze_epochs {ft.freeze_epochs} unfreezes the model after the head" if ft.freeze_epochs else \
            "unfreeze_schedule unfreezes layers" if ft.unfreeze_schedule else "strategy gradual unfreezes the model"
        raise UserError(f"{what}, but freeze: {ft.freeze} keeps the backbone frozen; use one of them "
                        f"(frozen_stages or freeze_patterns keep part of it frozen){via}")
    if ft.unfreeze_lr_scale != 1.0 and not unfreezing:
        raise UserError("unfreeze_lr_scale applies after an unfreeze; use it with freeze_epochs, unfreeze_schedule "
                        "or strategy lp_ft/gradual, or use layer_decay for one-phase runs")
    if ft.unfreeze_schedule and (ft.freeze_epochs or ft.strategy == "gradual"):
        raise UserError("unfreeze_schedule, freeze_epochs and strategy gradual each schedule the unfreezing; "
                        "use one of them")
    for epoch in ft.unfreeze_schedule or {}:
        if not 2 <= epoch <= epochs:
            raise UserError(f"unfreeze_schedule epoch {epoch} is outside 2..{epochs} (epoch_size); "
                            "epochs count from 1 and epoch 1 trains the classifier alone")
    if ft.paramwise_cfg is not None:
        check_paramwise_cfg(ft.paramwise_cfg)
    if cfg.optim.lr == "auto" and cfg.optim.auto_scale_lr and cfg.optim.auto_scale_lr.get("enable", True):
        raise UserError("lr: auto finds the lr for this batch size itself; remove auto_scale_lr or set a number lr")
    if cfg.optim.auto_scale_lr is not None:
        base = cfg.optim.auto_scale_lr.get("base_batch_size")
        unknown = set(cfg.optim.auto_scale_lr) - {"base_batch_size", "enable"}
        if unknown or not isinstance(base, int) or isinstance(base, bool) or base < 1:
            raise UserError("auto_scale_lr takes {base_batch_size: <positive integer>} (and optionally enable: "
                            f"true/false), got {cfg.optim.auto_scale_lr}")


def mapping_keys() -> set[str]:
    return {key for key in KEYS if typing.get_origin(key_type(key)) is dict}


def load_config(path: str | os.PathLike | None, overrides: dict[str, Any] | None = None,
                cfg_options: list[str] | None = None, *, base_layers: tuple[tuple[dict[str, Any], str], ...] = (),
                training: bool = True) -> Config:
    """Defaults < `base_layers` (a checkpoint's config) < the YAML file (with its `_base_` files, edited by
    `cfg_options`) < command-line flags → a validated, resolved Config."""
    layers: list[tuple[dict[str, Any], str]] = list(base_layers)
    file_values = read_config_file(path) if path else {}
    if cfg_options:
        edits = parse_cfg_options(cfg_options, mapping_keys())
        file_values = merge(drop_replaced_strategy_keys(file_values, edits), edits)
    if file_values:
        where = f"{path} + --cfg-options" if path and cfg_options else str(path) if path else "--cfg-options"
        layers.append((file_values, where))
    layers.append((overrides or {}, "command line"))
    return config_from_dict(layers, training)


def with_num_classes(cfg: Config, num_classes: int) -> Config:
    """A copy of cfg with the class count found in the data."""
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, num_classes=num_classes))


def to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(cfg.to_flat(), sort_keys=False)


def save_config(cfg: Config, directory: str | os.PathLike) -> Path:
    """Write the resolved config as config.yaml in `directory` (atomically)."""
    target = Path(directory) / "config.yaml"
    atomic_write_text(target, to_yaml(cfg))
    return target
