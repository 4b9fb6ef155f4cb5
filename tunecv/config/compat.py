"""Other tools' config vocabulary: MindCV system keys, renamed keys, no-op keys, alias values, policy names."""

from __future__ import annotations

import logging
from typing import Any

from tunecv.config.foreign import unknown_key_hint
from tunecv.config.values import coerce
from tunecv.errors import UserError

logger = logging.getLogger(__name__)

# The keys MindCV's own configs set (tests/data/mindcv/config_keys.tsv): docs/mindcv.md says what each does here.
MINDCV_KEYS = (
    "amp_level", "aug_repeats", "auto_augment", "aux_factor", "batch_size", "ckpt_path", "ckpt_save_dir",
    "ckpt_save_interval", "ckpt_save_policy", "color_jitter", "crop_pct", "cutmix", "cutmix_prob", "cycle_decay",
    "data_dir", "dataset", "dataset_download", "dataset_sink_mode", "decay_epochs", "decay_rate", "distribute",
    "drop_overflow_update", "drop_path_rate", "drop_rate", "drop_remainder", "ema", "ema_decay", "epoch_size", "eps",
    "filter_bias_and_bn", "gradient_accumulation_steps", "hflip", "image_resize", "in_channels", "interpolation",
    "keep_checkpoint_max", "label_smoothing", "log_interval", "loss", "loss_scale", "loss_scale_type", "lr",
    "lr_epoch_stair", "min_lr", "mixup", "mode", "model", "momentum", "multi_step_decay_milestones", "num_classes",
    "num_cycles", "num_parallel_workers", "opt", "pretrained", "ratio", "re_max_attempts", "re_prob", "re_ratio",
    "re_value", "scale", "scheduler", "seed", "shuffle", "train_split", "use_nesterov", "val_amp_level",
    "val_interval", "val_split", "val_while_train", "vflip", "warmup_epochs", "warmup_factor", "weight_decay",
    "weight_decay_filter",
)
# MindCV keys that mean nothing in PyTorch: accepted, logged once.
IGNORED_KEYS = {
    "mode": "MindSpore graph/pynative mode", "device_target": "PyTorch picks the device (see `device`)",
    "dataset_sink_mode": "MindSpore data sinking", "loss_scale": "AMP uses a dynamic GradScaler",
    "loss_scale_type": "AMP uses a dynamic GradScaler", "dynamic_loss_scale": "AMP uses a dynamic GradScaler",
    "drop_overflow_update": "the GradScaler skips overflowing steps",
    "enable_modelarts": "ModelArts platform", "multi_data_url": "ModelArts platform", "data_url": "ModelArts platform",
    "ckpt_url": "ModelArts platform", "train_url": "ModelArts platform", "val_amp_level": "evaluation runs in fp32",
}
# MindCV (and MMDetection's warmup) keys accepted only at their no-op value; anything else is an error rather
# than a silent no-op.
NOOP_KEYS: dict[str, tuple[Any, Any]] = {  # key: (no-op value, its type)
    "reduction": ("mean", str),
    "num_samples": (None, int | None), "resume_opt": (False, bool), "warmup": ("linear", str)}
# Other tools' names for our keys (PaddleClas class_num, MMPretrain load_from, ...).
RENAMED_KEYS = {"class_num": "num_classes", "epochs": "epoch_size", "load_from": "ckpt_path",
                "milestones": "multi_step_decay_milestones", "ann_file": "train_list", "data_prefix": "image_root",
                "cls_label_path": "train_list", "class_id_map_file": "class_list",
                "warmup_ratio": "warmup_factor"}
CASE_INSENSITIVE = {"opt", "loss", "scheduler", "interpolation", "weight_decay_filter", "ckpt_save_policy", "device",
                    "freeze", "dataset", "re_value", "annotation_level", "on_bad_image", "sampler", "class_weights",
                    "cache_images", "cache_features"}
_ON, _OFF = ("true", "yes", "on", "1"), ("false", "no", "off", "0")
VALUE_ALIASES = {
    "cache_images": {**{word: "none" for word in _OFF}, **{word: "auto" for word in _ON}, "memory": "ram"},
    "cache_features": {**{word: "true" for word in _ON}, **{word: "false" for word in _OFF}},
    "dataset": {"imagenet": "folder", "imagefolder": "folder", "image_folder": "folder", "": "auto",
                "customdataset": "auto", "custom": "auto", "fgvc_aircraft_native": "aircraft"},
    "scheduler": {"warmup_cosine_decay": "cosine_decay", "cosine": "cosine_decay", "step": "step_decay",
                  "multistep": "multi_step_decay", "multi_step": "multi_step_decay"},
    "re_value": {"0.0": "0"},
}
# MindCV auto_augment policy names → timm's (longest prefix first)
AUTO_AUGMENT_PREFIXES = (("autoaugr", "originalr"), ("autoaug", "original"), ("randaug", "rand"))


def accept(key: str, value: Any, where: str, known: dict[str, Any]) -> tuple[str, Any] | None:
    """Map a raw (key, value) onto one of `known`, or None for a key that is accepted and ignored."""
    key = underscored(key)
    if key in RENAMED_KEYS:
        logger.info("config: %s (%s) is read as %s", key, where, RENAMED_KEYS[key])
        key = RENAMED_KEYS[key]
    if key == "filter_bias_and_bn":
        value = coerce(key, value, bool, where)
        logger.info("config: filter_bias_and_bn=%s is read as weight_decay_filter", value)
        return "weight_decay_filter", "norm_and_bias" if value else "disable"
    if key in IGNORED_KEYS:
        logger.info("config: MindCV key %s ignored (%s)", key, IGNORED_KEYS[key])
        return None
    if key in NOOP_KEYS:
        default, kind = NOOP_KEYS[key]
        try:
            same = coerce(key, value, kind, where) == default
        except UserError:
            same = False
        if not same:
            raise UserError(f"{key} = {value!r} ({where}) is not supported by tunecv; remove it or set {default!r}")
        logger.info("config: key %s=%r ignored (it is the no-op value)", key, value)
        return None
    if key not in known:
        raise UserError(f"unknown config key {key!r} ({where}){unknown_key_hint(key, known, RENAMED_KEYS)}")
    if isinstance(value, str) and not value.strip() and "" in VALUE_ALIASES.get(key, {}):
        value = VALUE_ALIASES[key][""]  # MindCV's `dataset: ""` (a custom folder)
    return key, value


def underscored(key: str) -> str:
    """`batch-size` as batch_size: hyphens and underscores in a key's name are one (timm's and torchvision's
    flags have hyphens)."""
    return key.replace("-", "_")


def normalise(key: str, value: Any) -> Any:
    """Canonical spelling of a typed value: lower-case names, alias values, timm policy names."""
    if key in CASE_INSENSITIVE and isinstance(value, str):
        value = value.lower()
        value = VALUE_ALIASES.get(key, {}).get(value, value)
    if key == "amp_level" and isinstance(value, str):
        value = value.upper()
    if key == "auto_augment" and isinstance(value, str):
        value = timm_policy(value)
    return value


def timm_policy(policy: str) -> str:
    name, sep, rest = policy.partition("-")
    for mindcv, timm_name in AUTO_AUGMENT_PREFIXES:
        if name == mindcv:
            return timm_name + sep + rest
    return policy
