"""Config files and the new config keys: `_base_` inheritance, `--cfg-options`, `strategy`, `lr: auto`, mapping
keys from the command line, the fine-tuning cross-key rules and auto_scale_lr."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import write_yaml
from tunecv import cli
from tunecv.config import load_config, mapping_keys
from tunecv.config.files import (
    BUNDLED_CONFIGS,
    PATH_KEYS,
    merge,
    parse_cfg_options,
    read_config_file,
    resolve_path,
    resolve_paths,
)
from tunecv.errors import UserError
from tunecv.finetune.strategies import expand_strategy
from tunecv.optim.optimizers import auto_scaled_lr

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def data_dir(tmp_path: Path) -> str:
    return str(tmp_path / "data")  # load_config needs a data_dir, not its contents


# ------------------------------------------------------------------------------------------------ _base_

def test_base_list_later_wins_and_mappings_merge(tmp_path):
    write_yaml(tmp_path / "a.yaml", {"lr": 0.1, "batch_size": 8, "epoch_size": 3,
                                     "lr_scales": {"classifier": 2.0, "blocks.6": 1.5}})
    write_yaml(tmp_path / "b.yaml", {"lr": 0.2, "opt": "sgd", "lr_scales": {"blocks.6": 1.1}})
    child = write_yaml(tmp_path / "child.yaml", {"_base_": ["a.yaml", "b.yaml"], "epoch_size": 5,
                                                 "lr_scales": {"conv_stem": 0.5}})
    values = read_config_file(child)
    assert values == {"lr": 0.2, "batch_size": 8, "epoch_size": 5, "opt": "sgd",
                      "lr_scales": {"classifier": 2.0, "blocks.6": 1.1, "conv_stem": 0.5}}
    assert "_base_" not in values


def test_base_as_a_single_string_and_nested_chain(tmp_path):
    write_yaml(tmp_path / "root.yaml", {"lr": 0.1, "paramwise_cfg": {"custom_keys": {"head": {"lr_mult": 10}},
                                                                     "norm_decay_mult": 0.0}})
    write_yaml(tmp_path / "mid.yaml", {"_base_": "root.yaml", "paramwise_cfg": {"custom_keys": {"head":
                                                                                               {"decay_mult": 0}}}})
    child = write_yaml(tmp_path / "child.yaml", {"_base_": "mid.yaml", "lr": 0.3})
    assert read_config_file(child) == {"lr": 0.3, "paramwise_cfg": {
        "custom_keys": {"head": {"lr_mult": 10, "decay_mult": 0}}, "norm_decay_mult": 0.0}}


def test_base_delete_replaces_a_mapping(tmp_path):
    write_yaml(tmp_path / "base.yaml", {"lr_scales": {"classifier": 2.0, "blocks.6": 1.5}, "lr": 0.1})
    child = write_yaml(tmp_path / "child.yaml", {"_base_": "base.yaml",
                                                 "lr_scales": {"_delete_": True, "conv_stem": 0.5}})
    assert read_config_file(child) == {"lr_scales": {"conv_stem": 0.5}, "lr": 0.1}


def test_base_paths_are_relative_to_the_including_file(tmp_path):
    write_yaml(tmp_path / "shared" / "base.yaml", {"lr": 0.1, "opt": "sgd"})
    write_yaml(tmp_path / "sub" / "mid.yaml", {"_base_": "../shared/base.yaml", "batch_size": 16})
    child = write_yaml(tmp_path / "exp" / "deep" / "child.yaml", {"_base_": "../../sub/mid.yaml", "lr": 0.2})
    assert read_config_file(child) == {"lr": 0.2, "opt": "sgd", "batch_size": 16}


@pytest.mark.parametrize("cycle", [("a.yaml", "b.yaml"), ("a.yaml", "a.yaml")])
def test_base_cycle_is_user_error(tmp_path, cycle):
    first, second = cycle
    write_yaml(tmp_path / first, {"_base_": second, "lr": 0.1})
    if second != first:
        write_yaml(tmp_path / second, {"_base_": first, "lr": 0.2})
    with pytest.raises(UserError, match="cycle"):
        read_config_file(tmp_path / first)


def test_missing_base_is_user_error(tmp_path):
    child = write_yaml(tmp_path / "child.yaml", {"_base_": "nowhere.yaml"})
    with pytest.raises(UserError, match=r"_base_ file nowhere.yaml \(in .*child.yaml\) not found"):
        read_config_file(child)


def test_base_must_be_names(tmp_path):
    child = write_yaml(tmp_path / "child.yaml", {"_base_": {"a": 1}})
    with pytest.raises(UserError, match="_base_"):
        read_config_file(child)


def test_bundled_preset_fallback(tmp_path, data_dir):
    presets = sorted((ROOT / "configs" / "presets").glob("*.yaml"))
    if not presets:
        pytest.skip("no configs/presets/*.yaml in this checkout")
    assert BUNDLED_CONFIGS == ROOT / "configs"
    preset = presets[0]
    child = write_yaml(tmp_path / "mine.yaml", {"_base_": f"presets/{preset.name}", "data_dir": data_dir,
                                                "epoch_size": 2})
    values = read_config_file(child)
    expected = read_config_file(preset)
    assert values == {**expected, "data_dir": data_dir, "epoch_size": 2}
    cfg = load_config(child)
    assert cfg.train.epoch_size == 2 and cfg.data.data_dir == data_dir


def test_a_file_beside_wins_over_the_bundled_one(tmp_path):
    bundled = ROOT / "configs" / "demo.yaml"
    if not bundled.is_file():
        pytest.skip("no configs/demo.yaml in this checkout")
    child = write_yaml(tmp_path / "mine.yaml", {"_base_": "demo.yaml"})
    assert read_config_file(child) == read_config_file(bundled)  # not beside: the bundled one
    write_yaml(tmp_path / "demo.yaml", {"lr": 0.123})
    assert read_config_file(child) == {"lr": 0.123}


def test_merge_does_not_modify_its_inputs():
    base = {"a": {"x": 1}}
    override = {"a": {"y": 2}}
    assert merge(base, override) == {"a": {"x": 1, "y": 2}}
    assert base == {"a": {"x": 1}} and override == {"a": {"y": 2}}


def test_nested_delete_under_a_key_the_base_lacks(tmp_path, data_dir):
    write_yaml(tmp_path / "base.yaml", {"lr": 0.1})
    child = write_yaml(tmp_path / "child.yaml", {"_base_": "base.yaml", "paramwise_cfg": {
        "custom_keys": {"_delete_": True, "classifier": {"lr_mult": 2.0}}}})
    cfg = load_config(child, {"data_dir": data_dir})
    assert cfg.finetune.paramwise_cfg == {"custom_keys": {"classifier": {"lr_mult": 2.0}}}


def test_delete_false_merges_and_is_dropped(tmp_path, data_dir):
    write_yaml(tmp_path / "base.yaml", {"lr_scales": {"classifier": 2.0}})
    child = write_yaml(tmp_path / "child.yaml", {"_base_": "base.yaml",
                                                 "lr_scales": {"_delete_": False, "conv_stem": 0.5}})
    cfg = load_config(child, {"data_dir": data_dir})
    assert cfg.finetune.lr_scales == {"classifier": 2.0, "conv_stem": 0.5}


def test_base_with_home_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    write_yaml(tmp_path / "base.yaml", {"lr": 0.5})
    child = write_yaml(tmp_path / "sub" / "child.yaml", {"_base_": "~/base.yaml", "epoch_size": 3})
    assert read_config_file(child) == {"lr": 0.5, "epoch_size": 3}


# ------------------------------------------------------------------------- paths in config files, unsafe YAML

def test_path_beside_the_config_wins(tmp_path, monkeypatch):
    folder = tmp_path / "sub"
    (folder / "imgs").mkdir(parents=True)
    (tmp_path / "imgs").mkdir()  # also there from the working directory: the config's folder wins
    monkeypatch.chdir(tmp_path)
    assert resolve_path("imgs", folder) == str(folder / "imgs")


def test_path_from_the_working_directory_when_only_there(tmp_path, monkeypatch):
    """configs/hymenoptera.yaml says data_dir: ../shared/data/..., meant from the repo root."""
    (tmp_path / "data" / "train").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert resolve_path("data", tmp_path / "configs") == "data"
    assert resolve_path("./data/train", tmp_path / "configs") == "data/train"


def test_path_nowhere_is_named_beside_the_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_path("missing/list.txt", tmp_path / "sub") == str(tmp_path / "sub" / "missing" / "list.txt")


def test_absolute_home_and_empty_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    folder = tmp_path / "sub"
    assert resolve_path("/data/imgs", folder) == "/data/imgs"
    assert resolve_path("~/imgs", folder) == str(tmp_path / "home" / "imgs")
    assert [resolve_path(v, folder) for v in (None, "", "  ", 3)] == [None, "", "  ", 3]
    assert resolve_paths({"data_dir": "imgs", "model": "resnet18", "ckpt_save_dir": "out"}, folder) == \
        {"data_dir": str(folder / "imgs"), "model": "resnet18", "ckpt_save_dir": "out"}  # outputs: from cwd
    assert set(PATH_KEYS) == {"data_dir", "train_list", "val_list", "image_root", "class_list", "ckpt_path"}


def test_config_file_paths_resolve_against_the_file_that_sets_them(tmp_path, monkeypatch):
    root = tmp_path.resolve()
    for folder in ("shared/imgs", "exp/lists"):
        (root / folder).mkdir(parents=True)
    write_yaml(root / "shared" / "base.yaml", {"data_dir": "imgs", "class_list": "lists/labels.txt"})
    child = write_yaml(root / "exp" / "child.yaml", {"_base_": "../shared/base.yaml", "train_list": "lists/t.txt",
                                                     "load_from": "w.pth"})  # MMPretrain's name for ckpt_path
    monkeypatch.chdir(root / "exp")  # lists/ is also here from the working directory: the files decide
    values = read_config_file(child)
    assert values["data_dir"] == str(root / "shared" / "imgs")
    assert values["class_list"] == str(root / "shared" / "lists" / "labels.txt")
    assert values["train_list"] == str(root / "exp" / "lists" / "t.txt")
    assert values["ckpt_path"] == str(root / "exp" / "w.pth")


def test_an_image_root_found_nowhere_stays_relative_for_data_dir_to_hold(tmp_path):
    config = write_yaml(tmp_path / "configs" / "x.yaml", {"image_root": "leftImg8bit", "class_list": "c.txt"})
    values = read_config_file(config)
    assert values["image_root"] == "leftImg8bit"  # data_path looks under data_dir first
    assert values["class_list"] == str(tmp_path / "configs" / "c.txt")  # the path the file meant, in errors


def test_command_line_paths_stay_relative_to_the_working_directory(tmp_path, monkeypatch):
    root = tmp_path.resolve()
    (root / "sub" / "imgs").mkdir(parents=True)
    config = write_yaml(root / "sub" / "x.yaml", {"data_dir": "imgs", "epoch_size": 2})
    monkeypatch.chdir(root)
    assert load_config(config).data.data_dir == str(root / "sub" / "imgs")
    assert load_config(config, {"data_dir": "imgs"}).data.data_dir == "imgs"
    assert load_config(config, cfg_options=["data_dir=imgs"]).data.data_dir == "imgs"


UNSAFE_YAML = 'lr: 0.1\ndata_dir: !!python/object/apply:os.system ["touch MARKER"]\n'


def test_yaml_python_tag_is_refused_in_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bad = tmp_path.resolve() / "bad.yaml"
    bad.write_text(UNSAFE_YAML)
    with pytest.raises(UserError) as info:
        load_config(bad)
    assert str(info.value) == (f"config file {bad} line 2 has the YAML tag !!python/object/apply:os.system; tags "
                               "that build Python objects or run code are not allowed, write a plain value")
    assert not (tmp_path / "MARKER").exists()
    (tmp_path / "broken.yaml").write_text("lr: [0.1\n")
    with pytest.raises(UserError, match=r'^config file .*broken.yaml:1:5 is not valid YAML \(.*\): "lr: \[0.1"; '
                                        r"fix that line$"):
        read_config_file(tmp_path / "broken.yaml")


def test_yaml_python_tag_through_finetune_py(tmp_path):
    (tmp_path / "bad.yaml").write_text(UNSAFE_YAML)
    proc = subprocess.run([sys.executable, str(ROOT / "finetune.py"), "--config", "bad.yaml"], cwd=tmp_path,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.splitlines() == [f"tunecv: error: config file {(tmp_path / 'bad.yaml').resolve()} line 2 has "
                                        "the YAML tag !!python/object/apply:os.system; tags that build Python "
                                        "objects or run code are not allowed, write a plain value"]
    assert not (tmp_path / "MARKER").exists()


# ------------------------------------------------------------------------------------------ --cfg-options

def test_parse_cfg_options():
    keys = mapping_keys()
    assert {"lr_scales", "paramwise_cfg", "unfreeze_schedule", "auto_scale_lr"} <= keys
    options = ["a=1", "lr_scales.blocks.6=1.1", "lr_scales.classifier=1.2",
               "paramwise_cfg.custom_keys.head.fc.lr_mult=10", "paramwise_cfg.custom_keys.head.fc.decay_mult=0",
               "paramwise_cfg.norm_decay_mult=0", "milestones=[3,6]", "freeze_patterns=[blocks.0, blocks.1]",
               "data_dir=/a=b", "name=text"]
    assert parse_cfg_options(options, keys) == {
        "a": 1, "lr_scales": {"blocks.6": 1.1, "classifier": 1.2},
        "paramwise_cfg": {"custom_keys": {"head.fc": {"lr_mult": 10, "decay_mult": 0}}, "norm_decay_mult": 0},
        "multi_step_decay_milestones": [3, 6], "freeze_patterns": ["blocks.0", "blocks.1"], "data_dir": "/a=b",
        "name": "text"}


@pytest.mark.parametrize("option, needle", [
    ("lr.x=1", "lr is not a mapping key; write lr=VALUE"),
    ("batch_size.4=1", "batch_size is not a mapping key"),
    ("lr", "takes key=value pairs"),
    ("=3", "takes key=value pairs"),
])
def test_cfg_options_errors(option, needle):
    with pytest.raises(UserError, match=needle):
        parse_cfg_options([option], mapping_keys())


def test_load_config_cfg_options_merge_into_the_file(yaml_config, data_dir):
    path = yaml_config({"data_dir": data_dir, "lr": 0.1, "epoch_size": 4, "lr_scales": {"classifier": 1.2}})
    cfg = load_config(path, {"epoch_size": 6}, ["lr=0.05", "lr_scales.blocks.6=1.1", "milestones=[3,6]",
                                                "unfreeze_schedule.3=[blocks.4]", "epoch_size=5"])
    assert cfg.optim.lr == 0.05
    assert cfg.finetune.lr_scales == {"classifier": 1.2, "blocks.6": 1.1}
    assert list(cfg.finetune.lr_scales) == ["classifier", "blocks.6"]  # order kept: first match wins
    assert cfg.sched.multi_step_decay_milestones == (3, 6)
    assert cfg.finetune.unfreeze_schedule == {3: ("blocks.4",)}
    assert cfg.train.epoch_size == 6  # a flag still wins over the file and its edits


def test_cfg_options_without_a_file(data_dir):
    cfg = load_config(None, {"data_dir": data_dir}, ["lr=0.07", "auto_scale_lr.base_batch_size=64"])
    assert cfg.optim.lr == 0.07 and cfg.optim.auto_scale_lr == {"base_batch_size": 64}


def test_cfg_options_flag_on_the_command_line(tmp_path, data_dir):
    parser = cli.build_parser("finetune.py", "test")
    args, overrides = cli.parse_args(parser, ["--data_dir", data_dir, "--cfg-options", "lr=0.05",
                                              "lr_scales.classifier=2"], ())
    cfg = load_config(args.config, overrides, args.cfg_options)
    assert cfg.optim.lr == 0.05 and cfg.finetune.lr_scales == {"classifier": 2.0}


# -------------------------------------------------------------------------------------------------- strategy

NO_STRATEGY = {"freeze": "none", "frozen_stages": -1, "freeze_epochs": 0, "unfreeze_lr_scale": 1.0,
               "unfreeze_head_lr_scale": 1.0, "unfreeze_bn": "train"}
# lp_ft and gradual: the unfrozen layers keep their BatchNorm statistics and train at slice(lr/2/100, lr/2)
UNFROZEN_SAFELY = {"unfreeze_lr_scale": 0.01, "unfreeze_head_lr_scale": 0.5, "unfreeze_bn": "eval"}


@pytest.mark.parametrize("values, expected", [
    ({}, {}),
    ({"strategy": "full"}, {**NO_STRATEGY, "strategy": "full"}),
    ({"strategy": "linear_probe"}, {**NO_STRATEGY, "strategy": "linear_probe", "freeze": "all"}),
    ({"strategy": "freeze:3"}, {**NO_STRATEGY, "strategy": "freeze:3", "frozen_stages": 3}),
    ({"strategy": "Freeze: 2"}, {**NO_STRATEGY, "strategy": "freeze:2", "frozen_stages": 2}),
    ({"strategy": "lp_ft"}, {**NO_STRATEGY, **UNFROZEN_SAFELY, "strategy": "lp_ft", "freeze_epochs": 1}),
    ({"strategy": "gradual"}, {**NO_STRATEGY, **UNFROZEN_SAFELY, "strategy": "gradual"}),
    ({"strategy": "linear_probe", "freeze": "head_only"}, {**NO_STRATEGY, "strategy": "linear_probe",
                                                           "freeze": "head_only"}),
    ({"strategy": "freeze:3", "frozen_stages": 1}, {**NO_STRATEGY, "strategy": "freeze:3", "frozen_stages": 1}),
    ({"strategy": "lp_ft", "freeze_epochs": 3}, {**NO_STRATEGY, **UNFROZEN_SAFELY, "strategy": "lp_ft",
                                                 "freeze_epochs": 3}),
])
def test_expand_strategy(values, expected):
    assert expand_strategy(values) == expected


@pytest.mark.parametrize("strategy", ["freeze", "freeze:x", "fine_tune", "freeze:-1"])
def test_bad_strategy_is_user_error(strategy):
    with pytest.raises(UserError, match="is not one of full, linear_probe, freeze:N, lp_ft, gradual"):
        expand_strategy({"strategy": strategy})


def test_strategy_through_load_config(yaml_config, data_dir):
    assert load_config(None, {"data_dir": data_dir, "strategy": "linear_probe"}).finetune.freeze == "all"
    assert load_config(None, {"data_dir": data_dir, "strategy": "freeze:3"}).finetune.frozen_stages == 3
    lp_ft = load_config(None, {"data_dir": data_dir, "strategy": "lp_ft"})
    assert (lp_ft.finetune.freeze_epochs, lp_ft.finetune.freeze) == (1, "none")
    # a strategy on the command line replaces what the file (e.g. a saved config.yaml) says
    path = yaml_config({"data_dir": data_dir, "frozen_stages": 1, "freeze_epochs": 0, "strategy": "freeze:1"})
    assert load_config(path, {"strategy": "freeze:3"}).finetune.frozen_stages == 3
    assert load_config(path, {"strategy": "lp_ft"}).finetune.frozen_stages == -1
    assert load_config(path, {"strategy": "lp_ft", "epoch_size": 3}).finetune.freeze_epochs == 1
    # ... and a key set next to the strategy, or in a later layer, wins over it
    path = yaml_config({"data_dir": data_dir, "strategy": "freeze:3", "frozen_stages": 1}, "same_layer.yaml")
    assert load_config(path).finetune.frozen_stages == 1
    assert load_config(path, {"frozen_stages": 2}).finetune.frozen_stages == 2
    with pytest.raises(UserError, match="strategy"):
        load_config(None, {"data_dir": data_dir, "strategy": "probe"})


# ----------------------------------------------------------------------------------------------- lr: auto

@pytest.mark.parametrize("value", ["auto", "AUTO", " Auto "])
def test_lr_auto_accepted(data_dir, value):
    assert load_config(None, {"data_dir": data_dir, "lr": value}).optim.lr == "auto"


def test_lr_auto_from_yaml(yaml_config, data_dir):
    assert load_config(yaml_config({"data_dir": data_dir, "lr": "auto"})).optim.lr == "auto"


@pytest.mark.parametrize("value", ["fast", "autoo", "0"])
def test_lr_other_words_rejected(data_dir, value):
    with pytest.raises(UserError, match="lr"):
        load_config(None, {"data_dir": data_dir, "lr": value})


# ------------------------------------------------------------------------------ mapping keys as flags

def test_mapping_keys_from_the_command_line(data_dir):
    parser = cli.build_parser("finetune.py", "test")
    _, overrides = cli.parse_args(parser, ["--data_dir", data_dir, "--lr_scales", "{classifier:1.2}",
                                           "--paramwise_cfg", "{custom_keys: {head: {lr_mult: 10}}}",
                                           "--unfreeze_schedule", "{2:[blocks.4], 3: [all]}", "--epoch_size", "3",
                                           "--auto_scale_lr", "{base_batch_size:64}"], ())
    cfg = load_config(None, overrides)
    assert cfg.finetune.lr_scales == {"classifier": 1.2}
    assert cfg.finetune.paramwise_cfg == {"custom_keys": {"head": {"lr_mult": 10}}}
    assert cfg.finetune.unfreeze_schedule == {2: ("blocks.4",), 3: ("all",)}
    assert cfg.optim.auto_scale_lr == {"base_batch_size": 64}


@pytest.mark.parametrize("text, expected", [
    ("{classifier:1.2, blocks.6:1.1}", {"classifier": 1.2, "blocks.6": 1.1}),
    ("{classifier: 2}", {"classifier": 2.0}),
    ("{blocks.1*:.5}", {"blocks.1*": 0.5}),
])
def test_lr_scales_text(data_dir, text, expected):
    scales = load_config(None, {"data_dir": data_dir, "lr_scales": text}).finetune.lr_scales
    assert scales == expected and all(isinstance(v, float) for v in scales.values())


def test_lr_scales_not_a_mapping(data_dir):
    with pytest.raises(UserError, match="lr_scales"):
        load_config(None, {"data_dir": data_dir, "lr_scales": "[1, 2]"})


# --------------------------------------------------------------------------------------- cross-key rules

@pytest.mark.parametrize("overrides, needle", [
    ({"freeze_epochs": 3, "epoch_size": 3}, "freeze_epochs 3 leaves no epoch to train unfrozen"),
    ({"freeze_epochs": 1, "epoch_size": 3, "freeze": "all"}, "freeze: all keeps the backbone frozen"),
    ({"strategy": "lp_ft", "epoch_size": 3, "freeze": "head_only"}, "freeze: head_only keeps the backbone frozen"),
    ({"unfreeze_schedule": "{2: [all]}", "epoch_size": 3, "freeze": "all"}, "unfreeze_schedule unfreezes layers"),
    ({"unfreeze_lr_scale": 0.1}, "unfreeze_lr_scale applies after an unfreeze"),
    ({"lr": "auto", "auto_scale_lr": "{base_batch_size: 256}"}, "lr: auto finds the lr"),
    ({"strategy": "gradual", "freeze": "all"}, "strategy gradual unfreezes"),
    ({"unfreeze_schedule": {1: ["blocks"]}, "epoch_size": 3}, "unfreeze_schedule epoch 1 is outside 2..3"),
    ({"unfreeze_schedule": {4: ["blocks"]}, "epoch_size": 3}, "unfreeze_schedule epoch 4 is outside 2..3"),
    ({"unfreeze_schedule": {2: ["blocks"]}, "freeze_epochs": 1, "epoch_size": 3}, "use one of them"),
    ({"unfreeze_schedule": {2: ["blocks"]}, "strategy": "gradual", "epoch_size": 3}, "use one of them"),
    ({"paramwise_cfg": {"bias_lr_mult": 2}}, "paramwise_cfg: bias_lr_mult not supported"),
    ({"layer_decay": 1.5}, "layer_decay must be between"),
    ({"unfreeze_lr_scale": 0}, "unfreeze_lr_scale must be between"),
    ({"lr_find_steps": 2}, "lr_find_steps must be at least 5"),
    ({"frozen_stages": -2}, "frozen_stages must be at least -1"),
    ({"freeze": "backbone"}, "freeze = 'backbone'"),
])
def test_finetune_cross_key_errors(data_dir, overrides, needle):
    with pytest.raises(UserError) as info:
        load_config(None, {"data_dir": data_dir, **overrides})
    assert needle in str(info.value)


def test_valid_finetune_combinations(data_dir):
    cfg = load_config(None, {"data_dir": data_dir, "epoch_size": 4, "freeze_epochs": 3, "frozen_stages": 1,
                             "unfreeze_lr_scale": 0.1})
    assert (cfg.finetune.freeze_epochs, cfg.finetune.frozen_stages, cfg.finetune.unfreeze_lr_scale) == (3, 1, 0.1)
    cfg = load_config(None, {"data_dir": data_dir, "epoch_size": 4, "unfreeze_schedule": {2: ["a"], 4: ["b"]}})
    assert cfg.finetune.unfreeze_schedule == {2: ("a",), 4: ("b",)}


# ---------------------------------------------------------------------------------------------- auto_scale_lr

@pytest.mark.parametrize("value", [{"base_batch_size": 0}, {"base_batch_size": "x"}, {"base": 256},
                                   {"base_batch_size": 256, "scale": 2}, {"base_batch_size": 2.5},
                                   {"base_batch_size": True}, {"enable": True}])
def test_auto_scale_lr_rejected(data_dir, value):
    with pytest.raises(UserError, match="auto_scale_lr takes"):
        load_config(None, {"data_dir": data_dir, "auto_scale_lr": value})


def test_auto_scale_lr_accepted(data_dir):
    cfg = load_config(None, {"data_dir": data_dir, "auto_scale_lr": {"base_batch_size": 256, "enable": False}})
    assert cfg.optim.auto_scale_lr == {"base_batch_size": 256, "enable": False}


def test_auto_scaled_lr_math():
    assert auto_scaled_lr(0.1, {"base_batch_size": 256}, 32, 2, 1) == pytest.approx(0.1 * 64 / 256)
    assert auto_scaled_lr(0.1, {"base_batch_size": 256}, 32, 2, 8) == pytest.approx(0.2)
    assert auto_scaled_lr(0.01, {"base_batch_size": 8, "enable": True}, 16, 1, 1) == pytest.approx(0.02)
    assert auto_scaled_lr(0.1, {"base_batch_size": 256, "enable": False}, 32, 2, 8) == 0.1
    assert auto_scaled_lr(0.1, None, 32, 2, 8) == 0.1


def test_renamed_keys_lose_to_later_layers(tmp_path):
    (tmp_path / "base.yaml").write_text("epoch_size: 50\ndata_dir: /tmp\n")
    (tmp_path / "mid.yaml").write_text("_base_: base.yaml\nepochs: 20\n")
    (tmp_path / "child.yaml").write_text("_base_: mid.yaml\nepoch_size: 10\n")
    assert load_config(tmp_path / "child.yaml").train.epoch_size == 10
    assert load_config(tmp_path / "mid.yaml", cfg_options=["epoch_size=7"]).train.epoch_size == 7


@pytest.mark.parametrize("argv, expected", [
    (["--freeze_patterns", "blocks.[0-2]"], ("blocks.[0-2]",)),
    (["--freeze_patterns", "re:^blocks\\.\\d{1,2}"], ("re:^blocks\\.\\d{1,2}",)),
    (["--freeze_patterns", "re:a,b"], ("re:a,b",)),
    (["--freeze_patterns", "*"], ("*",)),
    (["--freeze_patterns", "blocks.0", "blocks.1*"], ("blocks.0", "blocks.1*")),
    (["--freeze_patterns", "[blocks.0, blocks.1]"], ("blocks.0", "blocks.1")),
])
def test_pattern_flags_keep_each_pattern_whole(argv, expected, data_dir):
    parser = cli.build_parser("finetune.py", "test")
    args, overrides = cli.parse_args(parser, ["--data_dir", data_dir, *argv], ())
    assert load_config(None, overrides).finetune.freeze_patterns == expected


def test_scale_flag_still_takes_one_or_two_tokens(data_dir):
    parser = cli.build_parser("finetune.py", "test")
    for argv in (["--scale", "0.5,1.0"], ["--scale", "0.5", "1.0"]):
        _, overrides = cli.parse_args(parser, ["--data_dir", data_dir, *argv], ())
        assert load_config(None, overrides).data.scale == (0.5, 1.0)


def test_nested_delete_replaces_under_a_key_the_base_has():
    base = {"paramwise_cfg": {"custom_keys": {"classifier": {"lr_mult": 10}}, "norm_decay_mult": 0}}
    over = {"paramwise_cfg": {"custom_keys": {"_delete_": True, "blocks.6": {"lr_mult": 2}}}}
    assert merge(base, over) == {"paramwise_cfg": {"custom_keys": {"blocks.6": {"lr_mult": 2}}, "norm_decay_mult": 0}}


def test_strategy_in_a_child_or_cfg_options_replaces_inherited_strategy_keys(tmp_path, data_dir):
    (tmp_path / "base.yaml").write_text(f"data_dir: {data_dir}\nfreeze: all\nfreeze_epochs: 0\nepoch_size: 3\n")
    (tmp_path / "child.yaml").write_text("_base_: base.yaml\nstrategy: lp_ft\n")
    cfg = load_config(tmp_path / "child.yaml")
    assert (cfg.finetune.freeze, cfg.finetune.freeze_epochs) == ("none", 1)
    cfg = load_config(tmp_path / "base.yaml", cfg_options=["strategy=freeze:2"])
    assert (cfg.finetune.freeze, cfg.finetune.frozen_stages) == ("none", 2)
    (tmp_path / "beside.yaml").write_text("_base_: base.yaml\nstrategy: lp_ft\nfreeze_epochs: 2\n")
    assert load_config(tmp_path / "beside.yaml").finetune.freeze_epochs == 2


def test_nested_mapping_typed_without_spaces(data_dir):
    cfg = load_config(None, {"data_dir": data_dir, "paramwise_cfg": "{custom_keys:{classifier:{lr_mult:0.1}}}"})
    assert cfg.finetune.paramwise_cfg == {"custom_keys": {"classifier": {"lr_mult": 0.1}}}
