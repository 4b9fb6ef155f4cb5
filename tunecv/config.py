"""Config: MindCV-style flat keys (YAML < CLI) → one validated, frozen `Config`; must not touch devices or data.

Every flat key has exactly one home in a section dataclass. Values are typed by their key, not by how YAML read
them (PyYAML reads `lr: 4e-3` as a string). Derived values (mean/std/interpolation/crop_pct) come from the model name.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tunecv import compat, models
from tunecv.config_values import closest_hint, coerce
from tunecv.data.torchvision_sets import DATASETS as TORCHVISION_DATASETS
from tunecv.errors import UserError
from tunecv.fileio import atomic_write_text
from tunecv.optim import OPTIMIZERS
from tunecv.scheduler import SCHEDULERS

__all__ = ["Config", "UserError", "load_config", "config_from_dict", "save_config", "KEYS"]

logger = logging.getLogger(__name__)


def _key(default: Any, help: str, choices: tuple[str, ...] = ()) -> Any:
    return field(default=default, metadata={"help": help, "choices": choices})


@dataclass(frozen=True)
class DataConfig:
    dataset: str = _key("auto", "data layout, auto-detected in data_dir, or a torchvision dataset (see Data layouts)",
                        ("auto", "folder", "single_folder", "list", "csv", "aircraft", "digits", *TORCHVISION_DATASETS))
    data_dir: str | None = _key(None, "dataset root: split folders, class folders, list/CSV files or FGVC-Aircraft")
    train_split: str = _key("train", "train split folder name")
    val_split: str = _key("val", "validation split folder name")
    train_list: str | None = _key(None, "list file (`path label` lines) or CSV of the training images")
    val_list: str | None = _key(None, "list file or CSV of the validation images")
    image_root: str | None = _key(None, "folder the list/CSV paths are relative to (default: data_dir)")
    class_list: str | None = _key(None, "class names, `<index> <name>` per line (PaddleClas label_list.txt)")
    path_column: str = _key("path", "CSV column holding the image path")
    label_column: str = _key("label", "CSV column holding the label (index or class name)")
    annotation_level: str = _key("variant", "FGVC-Aircraft label level", ("variant", "family", "manufacturer"))
    jpeg_draft: bool = _key(True, "decode large JPEGs at a reduced scale that still covers the input size")
    on_bad_image: str = _key("skip", "unreadable images: skip them (warned, listed in bad_images.txt) or error",
                             ("skip", "error"))
    val_fraction: float = _key(0.2, "single_folder: seeded, stratified share of each class held out for val")
    dataset_download: bool = _key(False, "download a torchvision dataset into data_dir (folders and digits need none)")
    image_resize: int = _key(224, "training crop / evaluation input size in pixels")
    scale: tuple[float, ...] = _key((0.08, 1.0), "RandomResizedCrop area range")
    ratio: tuple[float, ...] = _key((0.75, 1.333), "RandomResizedCrop aspect-ratio range")
    hflip: float = _key(0.5, "horizontal flip probability")
    vflip: float = _key(0.0, "vertical flip probability")
    color_jitter: tuple[float, ...] | None = _key((0.4,), "colour jitter: one strength, or brightness, contrast, "
                                                  "saturation[, hue] (null: off)")
    interpolation: str | None = _key(None, "resize interpolation (default: the model's)",
                                     ("bilinear", "bicubic", "nearest", "random"))
    auto_augment: str | None = _key(None, "timm or MindCV policy: rand-m7-mstd0.5 (MindCV randaug-m7-mstd0.5), "
                                          "original (MindCV autoaug), augmix-m5, v0, 3a")
    re_prob: float = _key(0.0, "random erasing probability")
    re_value: str = _key("0", "random erasing fill: 0 (zeros) or random (per-pixel noise)", ("0", "random"))
    mean: tuple[float, ...] | None = _key(None, "normalisation mean (default: the model's; 0-255 scale accepted)")
    std: tuple[float, ...] | None = _key(None, "normalisation std (default: the model's; 0-255 scale accepted)")
    crop_pct: float | None = _key(None, "evaluation centre-crop fraction (default: the model's)")


@dataclass(frozen=True)
class LoaderConfig:
    batch_size: int = _key(32, "images per step")
    num_parallel_workers: int = _key(8, "DataLoader workers (capped at the CPU count)")
    shuffle: bool = _key(True, "shuffle the training set each epoch")
    drop_remainder: bool = _key(False, "drop the last incomplete training batch (a batch of 1 is always dropped)")
    mixup: float = _key(0.0, "mixup alpha (0: off)")
    cutmix: float = _key(0.0, "cutmix alpha (0: off)")
    cutmix_prob: float = _key(1.0, "probability of applying mixup/cutmix to a batch")
    sampler: str = _key("none", "balanced: draw training images with probability 1/class size (WeightedRandomSampler)",
                        ("none", "balanced"))


@dataclass(frozen=True)
class ModelConfig:
    model: str = _key("tf_efficientnet_lite0", "timm, MindCV or torchvision model name")
    num_classes: int | None = _key(None, "classes (default: inferred from the data)")
    in_channels: int = _key(3, "input channels")
    drop_rate: float | None = _key(None, "dropout before the classifier")
    drop_path_rate: float | None = _key(None, "stochastic depth rate")
    pretrained: bool = _key(False, "start from ImageNet weights (bundled offline for tf_efficientnet_lite0/1/2)")
    ckpt_path: str | None = _key(None, "initialise from this local checkpoint (.pth/.pt/.ckpt/.safetensors)")
    ckpt_prefix: str | None = _key(None, "load only the keys under this prefix, e.g. backbone.")
    freeze: str = _key("none", "none, or all: train only the new classifier (backbone frozen, BatchNorm in eval)",
                       ("none", "all"))


@dataclass(frozen=True)
class OptimConfig:
    opt: str = _key("adamw", "optimizer", tuple(OPTIMIZERS))
    lr: float = _key(0.001, "peak learning rate")
    momentum: float = _key(0.9, "momentum (sgd/momentum/rmsprop)")
    weight_decay: float = _key(1e-4, "weight decay")
    use_nesterov: bool = _key(False, "Nesterov momentum (sgd/momentum)")
    weight_decay_filter: str = _key("auto", "auto/norm_and_bias: no decay on norm and bias; disable: decay all",
                                    ("auto", "norm_and_bias", "disable"))
    eps: float | None = _key(None, "optimizer epsilon (default: the optimizer's)")


@dataclass(frozen=True)
class SchedConfig:
    scheduler: str = _key("cosine_decay", "learning-rate schedule", SCHEDULERS)
    min_lr: float = _key(1e-6, "floor of cosine/polynomial decay")
    warmup_epochs: float = _key(0.0, "linear warm-up length in epochs")
    warmup_factor: float = _key(0.0, "warm-up starts at lr * warmup_factor")
    decay_epochs: float | None = _key(None, "cosine/polynomial: epochs to reach min_lr (default: the rest of the run);"
                                            " step/exponential: decay period")
    decay_rate: float = _key(0.1, "multiplier per decay (step/multi-step/exponential); power for polynomial")
    multi_step_decay_milestones: tuple[int, ...] = _key((30, 60, 90), "epochs at which multi_step_decay decays")
    lr_epoch_stair: bool = _key(False, "change the lr once per epoch instead of every step")
    num_cycles: int = _key(1, "cosine cycles")
    cycle_decay: float = _key(1.0, "peak multiplier from one cosine cycle to the next")


@dataclass(frozen=True)
class TrainConfig:
    epoch_size: int = _key(10, "epochs")
    loss: str = _key("ce", "ce (cross-entropy) or bce (binary cross-entropy)", ("ce", "bce"))
    label_smoothing: float = _key(0.0, "label smoothing")
    class_weights: str = _key("none", "auto: weight the cross-entropy by inverse class frequency", ("none", "auto"))
    val_while_train: bool = _key(True, "validate during training")
    val_interval: int = _key(1, "validate every N epochs (and after the last)")
    log_interval: int = _key(20, "progress-bar update (loss, lr, img/s) every N steps")
    seed: int = _key(42, "random seed")
    amp_level: str = _key("O0", "O0: fp32; O1/O2/O3: mixed precision (CUDA)", ("O0", "O1", "O2", "O3"))
    clip_grad: bool = _key(False, "clip the gradient norm")
    clip_value: float = _key(15.0, "max gradient norm when clip_grad")
    gradient_accumulation_steps: int = _key(1, "batches per optimizer step")
    ema: bool = _key(False, "keep an exponential moving average of the weights; it is validated and saved")
    ema_decay: float = _key(0.9999, "EMA decay")
    ckpt_save_dir: str = _key("./ckpt", "where checkpoints, results.txt, config.yaml and the log go")
    keep_checkpoint_max: int = _key(0, "also keep this many per-epoch checkpoints <model>-<epoch>.pth (0: none)")
    ckpt_save_policy: str = _key("latest_k", "which per-epoch checkpoints to keep", ("latest_k", "top_k"))
    ckpt_save_interval: int = _key(1, "write a per-epoch checkpoint every N epochs")
    device: str = _key("auto", "auto (cuda when available), cpu or cuda", ("auto", "cpu", "cuda"))
    channels_last: bool = _key(True, "NHWC memory format (measured faster for CNNs on CPU and GPU)")


SECTIONS = {"data": DataConfig, "loader": LoaderConfig, "model": ModelConfig,
            "optim": OptimConfig, "sched": SchedConfig, "train": TrainConfig}


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    loader: LoaderConfig = field(default_factory=LoaderConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    sched: SchedConfig = field(default_factory=SchedConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_flat(self) -> dict[str, Any]:
        """The flat MindCV-style key → value dict (plain Python values, lists for tuples)."""
        flat: dict[str, Any] = {}
        for section in SECTIONS:
            for key, value in dataclasses.asdict(getattr(self, section)).items():
                flat[key] = list(value) if isinstance(value, tuple) else value
        return flat


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


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a config file: a flat mapping of keys (MindCV style)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file {path} not found; check the --config path")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise UserError(f"config file {path} is not valid YAML: {str(err).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must hold a mapping of key: value lines")
    return data


def config_from_dict(layers: list[tuple[dict[str, Any], str]]) -> Config:
    """Build a Config from (mapping, where) layers; later layers win. `where` names the source in errors."""
    values: dict[str, Any] = {}
    for mapping, where in layers:
        for raw_key, raw_value in mapping.items():
            accepted = compat.accept(str(raw_key), raw_value, where, KEYS)
            if accepted is None:
                continue
            key, value = accepted
            section, _ = KEYS[key]
            value = compat.normalise(key, coerce(key, value, _TYPES[section][key], where))
            _validate(key, value, where)
            values[key] = value
    return _resolve(_build(values))


def _build(values: dict[str, Any]) -> Config:
    sections = {name: cls(**{k: v for k, v in values.items() if KEYS[k][0] == name}) for name, cls in SECTIONS.items()}
    return Config(**sections)


# key: (lowest, highest) allowed, inclusive; None is open-ended.
RANGES: dict[str, tuple[float | None, float | None]] = {
    "batch_size": (1, None), "epoch_size": (1, None), "val_interval": (1, None), "log_interval": (1, None),
    "gradient_accumulation_steps": (1, None), "image_resize": (8, None), "num_cycles": (1, None),
    "num_parallel_workers": (0, None), "ckpt_save_interval": (1, None), "keep_checkpoint_max": (0, None),
    "num_classes": (1, None), "val_fraction": (0, 0.9), "hflip": (0, 1), "vflip": (0, 1), "re_prob": (0, 1),
    "crop_pct": (0.05, 1),
    "mixup": (0, None), "cutmix": (0, None), "cutmix_prob": (0, 1), "drop_rate": (0, 0.99),
    "drop_path_rate": (0, 0.99), "lr": (1e-12, None), "momentum": (0, 1), "weight_decay": (0, None),
    "min_lr": (0, None), "warmup_epochs": (0, None), "warmup_factor": (0, 1), "decay_epochs": (0, None),
    "decay_rate": (0, None), "cycle_decay": (0, None), "label_smoothing": (0, 0.99), "clip_value": (1e-12, None),
    "ema_decay": (0, 1),
}


def _check_ranges(cfg: Config) -> None:
    for key, (low, high) in RANGES.items():
        value = getattr(getattr(cfg, KEYS[key][0]), key)
        if value is None:
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


def _resolve(cfg: Config) -> Config:
    """Fill derived values and check the rules that span keys."""
    _check_ranges(cfg)
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
    return dataclasses.replace(cfg, data=data)


def load_config(path: str | os.PathLike | None, overrides: dict[str, Any] | None = None) -> Config:
    """Defaults < the YAML file < command-line overrides → a validated, resolved Config."""
    layers: list[tuple[dict[str, Any], str]] = []
    if path:
        layers.append((read_yaml(path), str(path)))
    layers.append((overrides or {}, "command line"))
    return config_from_dict(layers)


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
