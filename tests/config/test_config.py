"""load_config: precedence, typing by key, MindCV compatibility, derived values, errors, save/load round trip."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest
from timm.optim import list_optimizers

from tunecv.config import KEYS, Config, UserError, load_config, save_config
from tunecv.optim import optimizers as optim
from tunecv.optim import schedulers as scheduler

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))

MINDCV_CONFIG = """\
mode: 0
distribute: True
num_parallel_workers: 8
val_while_train: True
dataset: 'imagenet'
data_dir: '/path/to/imagenet'
shuffle: True
dataset_download: False
batch_size: 75
drop_remainder: True
train_split: 'train'
image_resize: 224
scale: [0.08, 1.0]
ratio: [0.75, 1.333]
hflip: 0.5
color_jitter: 0.4
interpolation: 'bilinear'
crop_pct: 0.875
model: 'mobilenet_v3_small_100'
num_classes: 1000
pretrained: False
ckpt_path: ""
keep_checkpoint_max: 30
ckpt_save_dir: './ckpt'
epoch_size: 470
dataset_sink_mode: True
amp_level: 'O3'
loss: 'CE'
label_smoothing: 0.1
scheduler: 'cosine_decay'
min_lr: 0.0
lr: 0.77
warmup_epochs: 4
decay_epochs: 466
opt: 'momentum'
weight_decay_filter: 'auto'
momentum: 0.9
weight_decay: 0.00002
loss_scale: 1024
use_nesterov: False
"""

# More of MindCV's own configs (mindspore-lab/mindcv configs/*, trimmed of comments): "MindCV files work as they are".
MINDCV_RESNET50 = """\
mode: 0
distribute: True
num_parallel_workers: 8
dataset: 'imagenet'
data_dir: ''
shuffle: True
dataset_download: False
batch_size: 32
drop_remainder: True
image_resize: 224
scale: [0.08, 1.0]
ratio: [0.75, 1.333]
hflip: 0.5
interpolation: 'bilinear'
crop_pct: 0.875
model: 'resnet50'
num_classes: 1000
pretrained: False
ckpt_path: ''
keep_checkpoint_max: 30
ckpt_save_dir: './ckpt'
epoch_size: 120
dataset_sink_mode: True
amp_level: 'O2'
loss: 'CE'
label_smoothing: 0.1
scheduler: 'warmup_cosine_decay'
min_lr: 0.0
lr: 0.1
warmup_epochs: 0
decay_epochs: 120
opt: 'momentum'
filter_bias_and_bn: True
momentum: 0.9
weight_decay: 0.0001
loss_scale: 1024
use_nesterov: False
"""
MINDCV_VIT_B32 = """\
mode: 0
distribute: True
num_parallel_workers: 8
val_while_train: True
val_interval: 1
dataset: "imagenet"
data_dir: "/path/to/imagenet"
shuffle: True
batch_size: 512
image_resize: 224
scale: [0.08, 1.0]
ratio: [0.75, 1.333]
hflip: 0.5
vflip: 0.0
interpolation: "bicubic"
auto_augment: "randaug-m9-mstd0.5"
re_prob: 0.0
cutmix: 1.0
cutmix_prob: 1.0
mixup: 0.8
model: "vit_b_32_224"
num_classes: 1000
drop_rate: 0.1
drop_path_rate: 0.1
keep_checkpoint_max: 10
ckpt_save_dir: "./ckpt"
ckpt_save_interval: 1
ckpt_save_policy: "top_k"
epoch_size: 300
dataset_sink_mode: True
loss: "CE"
label_smoothing: 0.1
scheduler: "cosine_decay"
lr: 1.6e-3
min_lr: 0.0
warmup_epochs: 30
decay_epochs: 270
warmup_factor: 0.01
opt: "adamw"
weight_decay_filter: "norm_and_bias"
weight_decay: 0.3
use_nesterov: False
amp_level: "O2"
val_amp_level: 'O2'
loss_scale_type: 'fixed'
loss_scale: 1024
"""
# convnext_tiny_ascend.yaml sets MindCV's random-erasing fill; efficientnet_b0_ascend.yaml a per-channel jitter.
MINDCV_RE_VALUE = "model: convnext_tiny\nre_prob: 0.25\nre_value: 'random'\n"
MINDCV_COLOR_JITTER_LIST = "model: efficientnet_b0\ncolor_jitter: [0.4, 0.4, 0.4]\n"


@pytest.fixture
def data_dir(tmp_path: Path) -> str:
    return str(tmp_path)


def test_defaults_without_file(data_dir):
    cfg = load_config(None, {"data_dir": data_dir})
    assert cfg.optim.lr == 0.001 and cfg.optim.opt == "adamw"
    assert cfg.train.epoch_size == 10 and cfg.loader.batch_size == 32
    assert cfg.model.model == "tf_efficientnet_lite0"


def test_precedence_defaults_yaml_cli(yaml_config, data_dir):
    path = yaml_config({"data_dir": data_dir, "lr": 0.01, "batch_size": 8})
    cfg = load_config(path, {"lr": "0.002"})
    assert cfg.optim.lr == 0.002  # CLI beats YAML
    assert cfg.loader.batch_size == 8  # YAML beats default
    assert cfg.optim.momentum == 0.9  # default kept


@pytest.mark.parametrize("key, text, expected", [
    ("lr", "4e-3", 0.004),
    ("weight_decay", "1e-5", 1e-5),
    ("epoch_size", "3", 3),
    ("epoch_size", "3.0", 3),
    ("batch_size", 16.0, 16),
    ("pretrained", "yes", True),
    ("pretrained", "False", False),
    ("color_jitter", "null", None),
    ("scale", "0.5, 1.0", (0.5, 1.0)),
    ("multi_step_decay_milestones", [3, 6], (3, 6)),
])
def test_values_typed_by_key(yaml_config, data_dir, key, text, expected):
    # PyYAML reads 4e-3 (no dot) as a string; the key's type decides.
    cfg = load_config(yaml_config({"data_dir": data_dir, key: text}))
    section = getattr(cfg, KEYS[key][0])
    value = getattr(section, key)
    assert value == expected
    assert type(value) is type(expected)


def test_yaml_exponent_without_dot_is_float(tmp_path, data_dir):
    path = tmp_path / "c.yaml"
    path.write_text(f"data_dir: {data_dir}\nlr: 4e-3\nweight_decay: 1e-5\n")
    cfg = load_config(path)
    assert cfg.optim.lr == pytest.approx(0.004) and isinstance(cfg.optim.lr, float)
    assert cfg.optim.weight_decay == pytest.approx(1e-5)


@pytest.mark.parametrize("key, value", [("epoch_size", "3.5"), ("lr", "fast"), ("pretrained", "maybe"),
                                        ("scale", "a,b")])
def test_wrong_type_is_user_error_naming_key(data_dir, key, value):
    with pytest.raises(UserError, match=key):
        load_config(None, {"data_dir": data_dir, key: value})


@pytest.mark.parametrize("key, raw, section, expected", [
    ("opt", "SGD", "optim", "sgd"),
    ("loss", "CE", "train", "ce"),
    ("scheduler", "Cosine_Decay", "sched", "cosine_decay"),
    ("scheduler", "warmup_cosine_decay", "sched", "cosine_decay"),
    ("interpolation", "BILINEAR", "data", "bilinear"),
    ("amp_level", "o2", "train", "O2"),
    ("dataset", "ImageNet", "data", "folder"),
])
def test_choices_case_insensitive(data_dir, key, raw, section, expected):
    cfg = load_config(None, {"data_dir": data_dir, key: raw})
    assert getattr(getattr(cfg, section), key) == expected


def test_unknown_key_names_key_file_and_suggestion(yaml_config, data_dir):
    path = yaml_config({"data_dir": data_dir, "lrr": 0.1})
    with pytest.raises(UserError) as info:
        load_config(path)
    message = str(info.value)
    assert "'lrr'" in message and str(path) in message and "did you mean 'lr'" in message


def test_invalid_choice_lists_options(data_dir):
    with pytest.raises(UserError) as info:
        load_config(None, {"data_dir": data_dir, "scheduler": "cosine_decayy"})
    message = str(info.value)
    assert "scheduler" in message and "step_decay" in message and "did you mean 'cosine_decay'" in message


def test_choices_match_registries():
    # the config's valid choices and the factories' registries must not drift apart
    assert set(KEYS["opt"][1].metadata["choices"]) == set(optim.OPTIMIZERS)
    assert {"lion", "lamb", "lars", "adan", "adopt", "nesterov"} <= set(optim.OPTIMIZERS)  # MindCV's and timm's
    assert set(KEYS["scheduler"][1].metadata["choices"]) == set(scheduler.SCHEDULERS)


def test_the_torch_free_registries_name_what_their_stages_implement():
    from tunecv.config import registries
    from tunecv.data.torchvision_sets import DATASETS

    assert set(registries.TORCHVISION_DATASETS) == set(DATASETS)
    assert set(registries.OPTIMIZERS) - set(optim.MINDCV) <= set(list_optimizers())  # timm builds each
    assert not set(registries.REFUSED_OPTIMIZERS) & set(registries.OPTIMIZERS)
    for name in registries.SCHEDULERS:  # each has its formula: a schedule of it gives factors in [0, 1]
        schedule = scheduler.build_schedule(dataclasses.replace(Config().sched, scheduler=name), 0.1, 10, 3)
        assert all(0 <= scheduler.lr_factor(step, schedule) <= 1 for step in range(30))


def test_importing_the_config_package_loads_neither_torch_nor_timm():
    import subprocess
    import sys

    code = "import sys, tunecv.config; print(sorted({'torch', 'timm', 'torchvision'} & set(sys.modules)))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          cwd=Path(__file__).resolve().parents[2]).stdout.strip() == "[]"


@pytest.mark.parametrize("key, value", [("mode", 0), ("device_target", "Ascend"),
                                        ("loss_scale", 1024), ("dataset_sink_mode", True)])
def test_mindcv_system_keys_accepted_and_logged(caplog, data_dir, key, value):
    with caplog.at_level(logging.INFO, logger="tunecv.config.compat"):
        cfg = load_config(None, {"data_dir": data_dir, key: value})
    assert cfg == load_config(None, {"data_dir": data_dir})
    assert any(key in record.getMessage() and "ignored" in record.getMessage() for record in caplog.records)


def test_noop_key_rejected_unless_noop_value(yaml_config, data_dir):
    with pytest.raises(UserError, match="reduction = 'sum'"):
        load_config(yaml_config({"data_dir": data_dir, "reduction": "sum"}))
    accepted = load_config(yaml_config({"data_dir": data_dir, "resume_opt": False, "reduction": "mean"}))
    assert accepted == load_config(None, {"data_dir": data_dir})


def test_aux_factor_is_a_key_of_its_own(data_dir):
    assert load_config(None, {"data_dir": data_dir, "aux_factor": "0.1"}).model.aux_factor == 0.1
    with pytest.raises(UserError, match="aux_factor must be at least 0"):
        load_config(None, {"data_dir": data_dir, "aux_factor": -1})


@pytest.mark.parametrize("key, text", [("resume_opt", "false"), ("num_samples", "null")])
def test_noop_key_value_from_command_line(data_dir, key, text):
    load_config(None, {"data_dir": data_dir, key: text})


@pytest.mark.parametrize("value, expected", [(False, "disable"), (True, "norm_and_bias"), ("false", "disable")])
def test_filter_bias_and_bn_maps_to_weight_decay_filter(data_dir, value, expected):
    cfg = load_config(None, {"data_dir": data_dir, "filter_bias_and_bn": value})
    assert cfg.optim.weight_decay_filter == expected


def test_renamed_keys(data_dir):
    cfg = load_config(None, {"data_dir": data_dir, "class_num": 5, "epochs": "7", "milestones": [2, 4]})
    assert cfg.model.num_classes == 5
    assert cfg.train.epoch_size == 7
    assert cfg.sched.multi_step_decay_milestones == (2, 4)









@pytest.mark.parametrize("overrides, needle", [
    ({"batch_size": 0}, "batch_size"),
    ({"image_resize": 4}, "image_resize"),
    ({"scale": [0.5]}, "scale"),
    ({"ckpt_prefix": "backbone."}, "ckpt_path"),
    ({"opt": "sgd", "use_nesterov": True, "momentum": 0}, "momentum"),
    ({"num_classes": 0}, "num_classes"),
])
def test_cross_key_rules(data_dir, overrides, needle):
    with pytest.raises(UserError, match=needle):
        load_config(None, {"data_dir": data_dir, **overrides})


def test_folder_dataset_needs_data_dir():
    with pytest.raises(UserError, match="data_dir"):
        load_config(None, {})
    assert load_config(None, {"dataset": "digits"}).data.data_dir is None


def test_config_file_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: [0.1\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_config(bad)
    listed = tmp_path / "list.yaml"
    listed.write_text("- lr\n- 0.1\n")
    with pytest.raises(UserError, match="mapping"):
        load_config(listed)


def test_config_is_frozen(data_dir):
    cfg = load_config(None, {"data_dir": data_dir})
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.optim.lr = 1.0  # type: ignore[misc]


def test_save_config_round_trip(tmp_path, data_dir):
    cfg = load_config(None, {"data_dir": data_dir, "lr": "3e-4", "scale": "0.5,1.0", "mean": [123.675, 116.28, 103.53],
                             "std": [58.395, 57.12, 57.375], "num_classes": 3, "color_jitter": None})
    path = save_config(cfg, tmp_path / "out")
    assert path == tmp_path / "out" / "config.yaml"
    assert load_config(path) == cfg
    assert [p.name for p in path.parent.iterdir()] == ["config.yaml"]  # no temp file left


def test_real_mindcv_config_resolves(tmp_path, data_dir):
    path = tmp_path / "mobilenet_v3_small_ascend.yaml"
    path.write_text(MINDCV_CONFIG)
    cfg = load_config(path, {"data_dir": data_dir})
    assert isinstance(cfg, Config)
    assert cfg.model.model == "mobilenet_v3_small_100" and cfg.model.num_classes == 1000
    assert cfg.optim.lr == 0.77 and isinstance(cfg.optim.lr, float)
    assert cfg.optim.opt == "momentum" and cfg.optim.weight_decay == pytest.approx(2e-5)
    assert cfg.train.amp_level == "O3" and cfg.train.loss == "ce"
    assert cfg.sched.warmup_epochs == 4 and cfg.sched.decay_epochs == 466 and cfg.sched.min_lr == 0.0
    assert cfg.data.dataset == "folder" and cfg.data.data_dir == data_dir
    assert cfg.data.interpolation == "bilinear" and cfg.data.crop_pct == 0.875
    assert cfg.data.scale == (0.08, 1.0) and cfg.data.ratio == (0.75, 1.333)
    assert cfg.model.ckpt_path is None  # "" means none
    assert cfg.train.keep_checkpoint_max == 30 and cfg.train.epoch_size == 470


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_bundled_config_loads(path, tmp_path):
    cfg = load_config(path, {"data_dir": str(tmp_path)})
    assert isinstance(cfg, Config)
    assert cfg.train.ckpt_save_dir  # every config says where its run goes


@pytest.mark.parametrize("text, model, lr", [
    pytest.param(MINDCV_RESNET50, "resnet50", 0.1, id="resnet_50_ascend"),
    pytest.param(MINDCV_VIT_B32, "vit_b_32_224", 1.6e-3, id="vit_b32_224_ascend"),
])
def test_more_mindcv_configs_resolve(tmp_path, data_dir, text, model, lr):
    path = tmp_path / "mindcv.yaml"
    path.write_text(text)
    cfg = load_config(path, {"data_dir": data_dir})
    assert cfg.model.model == model and cfg.optim.lr == lr and cfg.train.amp_level == "O2"
    assert cfg.sched.scheduler == "cosine_decay"


@pytest.mark.parametrize("text, key, expected", [
    pytest.param(MINDCV_RE_VALUE, "re_value", "random", id="re_value"),
    pytest.param(MINDCV_COLOR_JITTER_LIST, "color_jitter", (0.4, 0.4, 0.4), id="color_jitter_list"),
])
def test_mindcv_augmentation_keys(tmp_path, data_dir, text, key, expected):
    path = tmp_path / "mindcv.yaml"
    path.write_text(text)
    assert getattr(load_config(path, {"data_dir": data_dir}).data, key) == expected


def test_timm_optimizers_load_by_name_and_adahessian_says_why_not(data_dir):
    assert load_config(None, {"data_dir": data_dir, "opt": "lion"}).optim.opt == "lion"
    with pytest.raises(UserError, match=r"opt = 'adahessian' \(command line\) cannot be used: it needs a "
                                        r"second-order backward pass .*; choose another"):
        load_config(None, {"data_dir": data_dir, "opt": "adahessian"})
    with pytest.raises(UserError, match=r"did you mean 'lion'.*; choose one of the \d+ names docs/config.md lists"):
        load_config(None, {"data_dir": data_dir, "opt": "loin"})


@pytest.mark.parametrize("extra, message", [
    ({"aug_repeats": -1}, "aug_repeats must be 0 (off) or more, got -1"),
    ({"aug_repeats": 3, "no_aug": True}, "aug_repeats shows each image several times under its own random"),
])
def test_aug_repeats_is_mindcv_s_repeated_augmentation(data_dir, extra, message):
    assert load_config(None, {"data_dir": data_dir, "aug_repeats": 3}).loader.aug_repeats == 3
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(None, {"data_dir": data_dir, **extra})


@pytest.mark.parametrize("extra, message", [
    ({"re_scale": [0.3, 0.1]}, r"re_scale takes two area fractions, low then high, each in \(0, 1\)"),
    ({"re_ratio": [0.3]}, r"re_ratio takes two aspect ratios above 0, low then high"),
    ({"re_max_attempts": 0}, r"re_max_attempts must be at least 1, got 0"),
])
def test_mindcv_s_random_erasing_keys(data_dir, extra, message):
    cfg = load_config(None, {"data_dir": data_dir, "re_prob": 0.25, "re_ratio": [0.3, 3.3], "re_max_attempts": 1})
    assert cfg.data.re_ratio == (0.3, 3.3) and cfg.data.re_scale == pytest.approx((0.02, 1 / 3))
    assert cfg.data.re_max_attempts == 1
    with pytest.raises(UserError, match=message):
        load_config(None, {"data_dir": data_dir, **extra})
