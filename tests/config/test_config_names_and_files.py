"""A user's config mistakes, each one sentence: invalid YAML (file:line:column and the line), a file that is not
text, another tool's key names (suggested with ours first), hyphens for underscores (accepted), and `--config` by
a bundled config's name (found in the package; its relative data paths from the working directory)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tunecv import cli
from tunecv.config import KEYS, load_config
from tunecv.config.compat import IGNORED_KEYS, NOOP_KEYS, RENAMED_KEYS
from tunecv.config.files import BUNDLED_CONFIGS, read_config_file, resolve_path
from tunecv.config.foreign import FOREIGN_NAMES
from tunecv.errors import UserError

ROOT = Path(__file__).resolve().parents[2]
HYMENOPTERA_DATA = "../shared/data/hymenoptera_data"  # configs/hymenoptera.yaml's data_dir


def _error(path_or_none, overrides=None, cfg_options=None) -> str:
    with pytest.raises(UserError) as info:
        load_config(path_or_none, overrides, cfg_options)
    message = str(info.value)
    assert "\n" not in message
    return message


# ------------------------------------------------------------------------------------------ invalid files

def test_invalid_yaml_names_file_line_column_and_quotes_the_line(tmp_path):
    bad = tmp_path / "x.yaml"
    bad.write_text("model: resnet18\nbatch_size: 8\nlr: 0.1: 2\nepoch_size: 3\n")
    assert _error(bad) == (f'config file {bad}:3:8 is not valid YAML (mapping values are not allowed here): '
                           '"lr: 0.1: 2"; fix that line')


def test_unclosed_bracket_names_the_line_it_began_on(tmp_path):
    bad = tmp_path / "x.yaml"
    bad.write_text("model: resnet18\nscale: [0.5, 1.0\nlr: 0.1\n")
    assert _error(bad) == (f"config file {bad}:3:3 is not valid YAML (expected ',' or ']', but got ':', while "
                           'parsing a flow sequence that began on line 2): "lr: 0.1"; fix that line or line 2')
    bad.write_text("model: resnet18\nscale: [0.5, 1.0\n")  # at the end of the file: the line it began on
    assert _error(bad).startswith(f"config file {bad}:2:8 is not valid YAML (while parsing a flow sequence, ")


def test_binary_file_as_config_is_one_sentence(tmp_path):
    weights = tmp_path / "model.pth"
    weights.write_bytes(b"PK\x03\x04\x14\x00\x00\x08\x08\x00\x9c\xff\xfe" + bytes(range(256)))
    assert _error(weights) == (f"config file {weights} is not UTF-8 text (byte 0x9c at offset 10); give a YAML "
                               "text file, saved as UTF-8")


def test_control_character_in_text_is_one_sentence(tmp_path):
    bad = tmp_path / "x.yaml"
    bad.write_text("lr: 0.1\x00\n")
    assert _error(bad) == f"config file {bad} is not YAML text (character #x0000 at offset 7); give a YAML text file"


def test_invalid_yaml_through_finetune_exits_2_in_one_line(tmp_path, capsys):
    from tunecv.scripts import finetune

    bad = tmp_path / "x.yaml"
    bad.write_text("lr: 0.1: 2\n")
    assert finetune.main(["--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [f'tunecv: error: config file {bad}:1:8 is not valid YAML (mapping values are not '
                                'allowed here): "lr: 0.1: 2"; fix that line']


# ------------------------------------------------------------------------------------------ key names

def test_hyphens_are_underscores_in_yaml_cfg_options_and_flags(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("batch-size: 8\nlabel-smoothing: 0.1\nclass-num: 4\n")
    cfg = load_config(path, {"data_dir": str(tmp_path)})
    assert (cfg.loader.batch_size, cfg.train.label_smoothing, cfg.model.num_classes) == (8, 0.1, 4)
    assert load_config(path, {"data_dir": str(tmp_path)}, ["batch-size=16"]).loader.batch_size == 16

    parser = cli.build_parser("t", "t")
    parser.add_argument("--print_config", action="store_true")
    args, hyphens = cli.parse_args(parser, ["--batch-size", "8", "--min-lr=-1e-6", "--cfg-options", "lr=0.5",
                                            "--print-config", "--class-num", "3"], script_flags=("print_config",))
    _, underscores = cli.parse_args(parser, ["--batch_size", "8", "--min_lr", "-1e-6", "--cfg_options", "lr=0.5",
                                             "--class_num", "3"], script_flags=("print_config",))
    assert hyphens == underscores == {"batch_size": "8", "min_lr": "-1e-6", "class_num": "3"}
    assert args.print_config and args.cfg_options == ["lr=0.5"]


@pytest.mark.parametrize("foreign, ours", [
    ("learning_rate", "lr"), ("img_size", "image_resize"), ("input_size", "image_resize"),
    ("image_size", "image_resize"), ("num_workers", "num_parallel_workers"), ("workers", "num_parallel_workers"),
    ("dataloader_num_workers", "num_parallel_workers"), ("sched", "scheduler"), ("lr_scheduler_type", "scheduler"),
    ("output", "ckpt_save_dir"), ("output_dir", "ckpt_save_dir"), ("data", "data_dir"), ("data_path", "data_dir"),
    ("train_dir", "data_dir"), ("warmup_lr", "warmup_factor"), ("num_train_epochs", "epoch_size"),
    ("per_device_train_batch_size", "batch_size"), ("wd", "weight_decay"), ("smoothing", "label_smoothing"),
    ("model_ema", "ema"), ("amp", "amp_level"), ("max_epochs", "epoch_size"), ("work_dir", "ckpt_save_dir"),
])
def test_other_tools_names_are_suggested_with_ours_first(tmp_path, foreign, ours):
    message = _error(None, {"data_dir": str(tmp_path), foreign: "1"})
    assert message.startswith(f"unknown config key {foreign!r} (command line); {foreign!r} is called {ours!r} "
                              "here (the name in "), message
    hyphenated = foreign.replace("_", "-")
    assert _error(None, {"data_dir": str(tmp_path), hyphenated: "1"}).startswith(
        f"unknown config key {foreign!r} (command line); {foreign!r} is called {ours!r} here")


def test_other_tools_names_in_a_file_name_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("learning_rate: 0.1\n")
    assert _error(path, {"data_dir": str(tmp_path)}) == (
        f"unknown config key 'learning_rate' ({path}); 'learning_rate' is called 'lr' here (the name in Hugging "
        "Face's Trainer and PaddleClas)")


def test_names_accepted_before_stay_accepted(tmp_path):
    cfg = load_config(None, {"data_dir": str(tmp_path), "epochs": "3", "batch-size": "4", "opt": "sgd"})
    assert (cfg.train.epoch_size, cfg.loader.batch_size, cfg.optim.opt) == (3, 4, "sgd")


def test_a_close_misspelling_of_another_tools_name_suggests_our_key(tmp_path):
    assert _error(None, {"data_dir": str(tmp_path), "learningrate": "1"}).startswith(
        "unknown config key 'learningrate' (command line); did you mean 'lr'")
    assert _error(None, {"data_dir": str(tmp_path), "lrr": "1"}) == \
        "unknown config key 'lrr' (command line); did you mean 'lr'?"


def test_foreign_names_table_is_consistent_and_documented():
    taken = set(KEYS) | set(RENAMED_KEYS) | set(IGNORED_KEYS) | set(NOOP_KEYS)
    assert not taken & set(FOREIGN_NAMES)  # a name tunecv reads is never only suggested
    assert all(ours in KEYS for ours, _, _ in FOREIGN_NAMES.values())
    assert all("-" not in name for name in FOREIGN_NAMES)  # hyphens are underscores before the lookup
    doc = (ROOT / "docs" / "config.md").read_text()
    section = doc[doc.index("## Names from other tools"):]
    missing = [name for name in FOREIGN_NAMES if f"`{name}`" not in section]
    assert not missing


# ------------------------------------------------------------------------------------------ bundled configs

@pytest.mark.parametrize("name", ["demo.yaml", "configs/demo.yaml"])
def test_bundled_config_by_name_from_another_folder(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(name)
    assert cfg.data.dataset == "digits" and cfg.train.epoch_size == 3


def test_bundled_preset_by_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_config("presets/resnet.yaml", {"data_dir": "imgs"}).model.model == "resnet50"


def test_a_local_file_wins_over_the_bundled_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo.yaml").write_text("dataset: digits\nlr: 0.5\n")
    assert load_config("demo.yaml").optim.lr == 0.5


def test_config_not_found_lists_where_it_looked_and_the_bundled_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    message = _error("dmeo.yaml")
    assert message.startswith(f"config file dmeo.yaml not found (not at {tmp_path.resolve() / 'dmeo.yaml'} nor "
                              f"{BUNDLED_CONFIGS / 'dmeo.yaml'}); ")
    assert "demo.yaml" in message and "presets/resnet.yaml" in message and "more in seeds/" in message


def test_bundled_configs_data_paths_are_from_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_config("hymenoptera.yaml").data.data_dir == HYMENOPTERA_DATA
    # a bundled file's _base_ (seeds/hymenoptera_base.yaml) is bundled too
    assert load_config("seeds/hymenoptera_full.yaml").data.data_dir == HYMENOPTERA_DATA
    assert read_config_file(BUNDLED_CONFIGS / "hymenoptera.yaml", bundled=True)["data_dir"] == HYMENOPTERA_DATA


def test_repo_config_by_its_path_resolves_as_before(monkeypatch):
    monkeypatch.chdir(ROOT)
    expected = str(Path(resolve_path(HYMENOPTERA_DATA, ROOT / "configs")))
    assert load_config("configs/hymenoptera.yaml").data.data_dir == expected


def test_finetune_prints_a_bundled_config_from_another_folder(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "tunecv.scripts.finetune", "--config", "demo.yaml",
                           "--print_config"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "dataset: digits" in proc.stdout and "ckpt_save_dir: ./ckpt/demo" in proc.stdout
    assert not any(tmp_path.iterdir())  # no run folder, no log file
