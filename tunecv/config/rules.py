"""The rules between keys: ranges, the keys each task reads, and the combinations that would do nothing or
contradict each other. Each raises a UserError naming the keys and the fix. Pure: no torch, no files but the
tensorboard import check."""

from __future__ import annotations

import dataclasses
from typing import Any

from tunecv.config.schema import KEYS, SECTIONS, TASK_KEYS, TASK_METRICS, Config, FinetuneConfig
from tunecv.errors import TENSORBOARD_MISSING, UserError
from tunecv.finetune.strategies import AUTO, implied_by, is_gradual

# MMPretrain's paramwise_cfg: the parts tunecv reads (tunecv.finetune.param_groups)
PARAMWISE_KEYS = {"custom_keys", "norm_decay_mult", "bias_decay_mult"}
CUSTOM_KEY_FIELDS = {"lr_mult", "decay_mult"}
def check(cfg: Config, training: bool = True) -> None:
    """The rules every config obeys, and its task's; `training` False (validate.py, predict.py) skips the ones
    that only matter for a training run."""
    _check_ranges(cfg)
    check_task_keys(cfg)
    if cfg.sched.warmup_iters is not None and cfg.sched.warmup_epochs:
        raise UserError("warmup_iters and warmup_epochs both set the warm-up length; set one of them")
    if cfg.train.log_tensorboard and training:
        _check_tensorboard()
    TASK_RULES[cfg.model.task](cfg, training)


def _check_classification(cfg: Config, training: bool) -> None:
    data = cfg.data
    if data.dataset != "digits" and not data.data_dir and not data.train_list:
        raise UserError("data_dir is not set; pass --data_dir DIR (DIR/<train_split>/<class>/*.jpg)")
    if data.color_jitter is not None and len(data.color_jitter) not in (1, 3, 4):
        raise UserError("color_jitter takes one number or 3-4 (brightness, contrast, saturation[, hue])")
    if len(data.scale) != 2 or len(data.ratio) != 2:
        raise UserError("scale and ratio take two numbers each, e.g. scale: [0.08, 1.0]")
    if len(data.re_scale) != 2 or not 0 < data.re_scale[0] <= data.re_scale[1] < 1:
        raise UserError(f"re_scale takes two area fractions, low then high, each in (0, 1), e.g. [0.02, 0.33]; got "
                        f"{list(data.re_scale)}")
    if len(data.re_ratio) != 2 or not 0 < data.re_ratio[0] <= data.re_ratio[1]:
        raise UserError(f"re_ratio takes two aspect ratios above 0, low then high, e.g. [0.3, 3.3]; got "
                        f"{list(data.re_ratio)}")
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


def _check_detection(cfg: Config, training: bool) -> None:
    det, ft = cfg.detection, cfg.finetune
    if not cfg.data.data_dir:
        raise UserError("data_dir is not set; pass --data_dir DIR (DIR/annotations/instances_<split>.json and "
                        "DIR/<split>/ images, or set train_ann_file / image_root)")
    if not det.min_size or min(det.min_size) < 32:
        raise UserError(f"min_size takes one or more sizes of at least 32 px, got {list(det.min_size)}")
    if max(det.min_size) > det.max_size:
        raise UserError(f"min_size {max(det.min_size)} is larger than max_size {det.max_size}; the shorter side "
                        "cannot exceed the longer one's bound")
    if det.trainable_backbone_layers is not None and ft.frozen_stages != -1:
        raise UserError("frozen_stages and trainable_backbone_layers both say how much of the backbone trains; "
                        "set one of them")
    if cfg.optim.lr == "auto":
        raise UserError("lr: auto (the LR range test) works for classification; give detection a number, e.g. "
                        "SGD 0.02 for a batch of 16 (MMDetection's), scaled by auto_scale_lr")


TASK_RULES = {"classification": _check_classification, "detection": _check_detection}


def changed_keys(cfg: Config) -> list[str]:
    """The keys whose value is not the default."""
    default = Config()
    return [f.name for section in SECTIONS for f in dataclasses.fields(SECTIONS[section])
            if getattr(getattr(cfg, section), f.name) != getattr(getattr(default, section), f.name)]


def check_task_keys(cfg: Config) -> None:
    """Each key set must be one the task reads (a key another task reads would be a silent no-op), and
    best_metric one of the task's metrics."""
    task = cfg.model.task
    foreign = [key for key in changed_keys(cfg) if key not in TASK_KEYS[task]]
    if foreign:
        owner = next(other for other in TASK_KEYS if other != task and foreign[0] in TASK_KEYS[other])
        one = len(foreign) == 1
        raise UserError(f"{', '.join(foreign)} {'is a key' if one else 'are keys'} of {owner}, which task: {task} "
                        f"does not use; remove {'it' if one else 'them'}")
    metric = cfg.train.best_metric
    if metric != "auto" and metric not in TASK_METRICS[task]:
        raise UserError(f"best_metric {metric} is not a metric of task: {task}; use auto or one of "
                        f"{', '.join(TASK_METRICS[task])}")


# key: (lowest, highest) allowed, inclusive; None is open-ended.
RANGES: dict[str, tuple[float | None, float | None]] = {
    "batch_size": (1, None), "epoch_size": (1, None), "val_interval": (1, None), "log_interval": (1, None),
    "gradient_accumulation_steps": (1, None), "image_resize": (8, None), "num_cycles": (1, None),
    "num_parallel_workers": (0, None), "ckpt_save_interval": (1, None), "keep_checkpoint_max": (0, None),
    "num_classes": (1, None), "val_fraction": (0, 0.9), "hflip": (0, 1), "vflip": (0, 1), "re_prob": (0, 1),
    "re_max_attempts": (1, None), "crop_pct": (0.05, 2), "feature_views": (0, None), "cache_ram_gb": (0, None),
    "mixup": (0, None), "cutmix": (0, None), "cutmix_prob": (0, 1), "drop_rate": (0, 0.99),
    "drop_path_rate": (0, 0.99), "aux_factor": (0, None), "lr": (1e-12, None), "momentum": (0, 1),
    "weight_decay": (0, None),
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
            raise UserError(f"{key} must be {bounds}, got {value}; give {key} a value {bounds}")


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
    repeats = cfg.loader.aug_repeats
    if repeats < 0:
        raise UserError(f"aug_repeats must be 0 (off) or more, got {repeats}")
    if repeats > 1 and data.no_aug:
        raise UserError("aug_repeats shows each image several times under its own random augmentation, and no_aug "
                        "leaves flips at most; set no_aug: false, or remove aug_repeats")
    if ft.feature_views and (ft.cache_features != "true" or data.no_aug):
        raise UserError("feature_views counts the augmented views of cache_features: true with random augmentation "
                        "(no_aug: false); remove it, or set cache_features: true")
    if data.cache_ram_gb is not None and data.cache_images != "auto":
        raise UserError(f"cache_ram_gb is the RAM budget of cache_images: auto, not {data.cache_images}; remove it")
    if data.cache_dir is not None and data.cache_images not in ("auto", "disk"):
        raise UserError(f"cache_dir holds disk caches; cache_images {data.cache_images} writes none; remove it")


def _check_finetune(cfg: Config) -> None:
    ft, epochs = cfg.finetune, cfg.train.epoch_size
    if ft.strategy == AUTO:
        _check_auto(cfg)
    via = implied_by(ft.strategy)
    if ft.freeze_epochs and ft.freeze_epochs >= epochs:
        raise UserError(f"freeze_epochs {ft.freeze_epochs} leaves no epoch to train unfrozen in epoch_size "
                        f"{epochs}; lower freeze_epochs or raise epoch_size{via}")
    unfreezing = ft.freeze_epochs or ft.unfreeze_schedule or is_gradual(ft.strategy)
    if unfreezing and ft.freeze != "none":
        what = f"freeze_epochs {ft.freeze_epochs} unfreezes the model after the head" if ft.freeze_epochs else \
            "unfreeze_schedule unfreezes layers" if ft.unfreeze_schedule else "strategy gradual unfreezes the model"
        raise UserError(f"{what}, but freeze: {ft.freeze} keeps the backbone frozen; use one of them "
                        f"(frozen_stages or freeze_patterns keep part of it frozen){via}")
    if ft.unfreeze_lr_scale != 1.0 and not unfreezing:
        raise UserError("unfreeze_lr_scale applies after an unfreeze; use it with freeze_epochs, unfreeze_schedule "
                        "or strategy lp_ft/gradual, or use layer_decay for one-phase runs")
    if ft.unfreeze_schedule and (ft.freeze_epochs or is_gradual(ft.strategy)):
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


# what strategy: auto decides itself; set beside it, they would be overwritten or make its measurement a lie
AUTO_DECIDES = ("freeze", "frozen_stages", "freeze_layers", "freeze_patterns", "unfreeze_patterns", "freeze_epochs",
                "unfreeze_schedule", "unfreeze_bn", "unfreeze_lr_scale", "unfreeze_head_lr_scale")


def _check_auto(cfg: Config) -> None:
    defaults = FinetuneConfig()
    given = [k for k in AUTO_DECIDES if getattr(cfg.finetune, k) != getattr(defaults, k)]
    if given:
        raise UserError(f"strategy: auto decides which layers train, but {', '.join(given)} is set too; remove "
                        f"{'it' if len(given) == 1 else 'them'}, or name a strategy instead of auto")


def check_paramwise_cfg(cfg: dict[str, Any]) -> None:
    """MMPretrain's paramwise_cfg, the parts tunecv reads; anything else is an error, not a silent no-op."""
    unknown = set(cfg) - PARAMWISE_KEYS
    if unknown:
        raise UserError(f"paramwise_cfg: {', '.join(sorted(unknown))} not supported; tunecv reads "
                        f"{', '.join(sorted(PARAMWISE_KEYS))}")
    for key in ("norm_decay_mult", "bias_decay_mult"):
        if key in cfg and (not isinstance(cfg[key], (int, float)) or isinstance(cfg[key], bool) or cfg[key] < 0):
            raise UserError(f"paramwise_cfg.{key} must be a number >= 0, got {cfg[key]!r}")
    custom = cfg.get("custom_keys", {})
    if not isinstance(custom, dict):
        raise UserError("paramwise_cfg.custom_keys must map a name to {lr_mult: x, decay_mult: y}")
    for name, spec in custom.items():
        if not isinstance(spec, dict) or not set(spec) <= CUSTOM_KEY_FIELDS or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in spec.values()):
            raise UserError(f"paramwise_cfg.custom_keys.{name} must be {{lr_mult: x, decay_mult: y}} with numbers "
                            f">= 0, got {spec!r}")
