"""The sweep's command checked before anything is written (the data, each searched value and their combinations,
resolved as a trial resolves them), and each trial's finetune.py command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import TINY_MODEL
from tunecv.errors import UserError
from tunecv.search.command import Command, check_sweep, flag_value, trial_argv

SWEEP_FLAGS = ("search", "trials", "study_name", "storage", "keep_checkpoints")


def _command(tiny_image_folder: Path, tmp_path: Path, **overrides) -> Command:
    flags = {"data_dir": str(tiny_image_folder), "model": TINY_MODEL, "pretrained": False,
             "ckpt_save_dir": str(tmp_path / "sweep"), **overrides}
    return Command(None, flags, None)


def test_the_data_is_resolved_before_the_sweep_starts(tiny_image_folder, tmp_path):
    space, base, metric = check_sweep(_command(tiny_image_folder, tmp_path), ["lr=log:1e-4:1e-1"], 3)
    assert list(space) == ["lr"] and metric == "top1" and base.train.ckpt_save_dir == str(tmp_path / "sweep")
    with pytest.raises(UserError, match="data_dir"):
        check_sweep(_command(tiny_image_folder / "typo", tmp_path), ["lr=log:1e-4:1e-1"], 3)
    with pytest.raises(UserError, match="num_classes is 5 but"):
        check_sweep(_command(tiny_image_folder, tmp_path, num_classes=5), ["lr=log:1e-4:1e-1"], 3)
    assert not (tmp_path / "sweep").exists()


def test_combinations_of_searched_values_are_checked(tiny_image_folder, tmp_path):
    command = _command(tiny_image_folder, tmp_path)
    check_sweep(command, ["strategy=lp_ft,full", "freeze_epochs=1:3"], 3)  # each combination trains
    with pytest.raises(UserError) as refused:
        check_sweep(command, ["strategy=linear_probe,full", "freeze_epochs=1:3"], 3)
    assert str(refused.value).startswith("--search combines strategy=linear_probe freeze_epochs=1, which a trial "
                                         "would refuse: freeze_epochs 1 unfreezes the model after the head")
    with pytest.raises(UserError, match=r"^--search cache_features=true,false: cache_features: true, but"):
        check_sweep(command, ["cache_features=true,false"], 3)  # what only resolving a run finds


def test_a_trials_command_line_is_finetune_pys_with_its_values(tmp_path):
    argv = ["--config", "x.yaml", "--search", "lr=log:1e-4:1e-1", "strategy=linear_probe,full", "--trials=4",
            "--lr_scales", "{classifier: 2}", "--ckpt-save-dir", "ckpt/sweep", "--min_lr", "-1e-6", "--storage",
            "sqlite:///s.db", "-q", "--keep_checkpoints", "all", "--study_name", "s"]
    folder = tmp_path / "trial_003"
    assert trial_argv(argv, SWEEP_FLAGS, {"lr": 0.0031234567891, "strategy": "full", "ema": True}, folder) == [
        "--config", "x.yaml", "--lr_scales", "{classifier: 2}", "--min_lr", "-1e-6", "-q",
        "--lr", "0.0031234567891", "--strategy", "full", "--ema", "true", "--ckpt_save_dir", str(folder)]
    assert [flag_value(v) for v in (0.1 + 0.2, 3, None, False, "freeze:2")] == [
        "0.30000000000000004", "3", "none", "false", "freeze:2"]
