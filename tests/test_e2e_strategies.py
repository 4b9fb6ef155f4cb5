"""End to end, as a user runs them: the fine-tuning strategies, the LR range test, lr: auto and --cfg-options
through finetune.py in subprocesses, checked on the files the runs write."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from conftest import CLASSES, TINY_MODEL, TRAIN_PER_CLASS, write_image_folder, write_yaml
from tunecv.config import ModelConfig
from tunecv.models.factory import create_model
from tunecv.train.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
# one intra-op thread: on a shared 2-core machine more threads only contend (see conftest)
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
BATCH = 4
STEPS_PER_EPOCH = len(CLASSES) * TRAIN_PER_CLASS // BATCH


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "finetune.py", *args], cwd=ROOT, env=ENV, capture_output=True, text=True,
                          timeout=300)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _finetune(data_dir: Path, out: Path, *extra: str, check: bool = True) -> subprocess.CompletedProcess:
    return _run("--data_dir", str(data_dir), "--model", TINY_MODEL, "--pretrained", "false", "--image_resize", "32",
                "--batch_size", str(BATCH), "--epoch_size", "1", "--num_parallel_workers", "0", "--device", "cpu",
                "--seed", "3", "--ckpt_save_dir", str(out), *extra, check=check)


def _results(out: Path) -> list[list[str]]:
    lines = (out / "results.txt").read_text().splitlines()
    assert lines[0].split()[:2] == ["epoch", "lr"]
    return [line.split() for line in lines[1:] if line[:1].isdigit()]


def _config(out: Path) -> dict:
    return yaml.safe_load((out / "config.yaml").read_text())


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("strategies") / "images")


def _total_params() -> int:
    return sum(p.numel() for p in create_model(ModelConfig(model=TINY_MODEL), num_classes=len(CLASSES)).parameters())


def test_freeze_all_keeps_every_backbone_tensor_bit_identical(data_dir, tmp_path):
    torch.manual_seed(0)
    model = create_model(ModelConfig(model=TINY_MODEL), num_classes=len(CLASSES))
    with torch.no_grad():  # statistics that are not the defaults, so "unchanged" means "loaded and left alone"
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.num_batches_tracked.fill_(11)
        model.classifier.weight.normal_(0, 0.01)
    initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
    torch.save(initial, tmp_path / "init.pth")

    out = tmp_path / "ckpt"
    _finetune(data_dir, out, "--freeze", "all", "--epoch_size", "2", "--lr", "0.05",
              "--ckpt_path", str(tmp_path / "init.pth"))
    last = load_checkpoint(out / f"{TINY_MODEL}_last.pth")
    trained = last["model"]
    assert trained.keys() == initial.keys()
    backbone = [k for k in initial if not k.startswith("classifier.")]
    assert any(k.endswith("running_mean") for k in backbone) and any(k.endswith("num_batches_tracked")
                                                                     for k in backbone)
    for key in backbone:
        assert trained[key].dtype == initial[key].dtype and torch.equal(trained[key], initial[key]), key
    assert not torch.equal(trained["classifier.weight"], initial["classifier.weight"])  # the head did train
    # frozen tensors are left out of the optimizer: its state holds the classifier only
    assert sum(len(g["params"]) for g in last["optimizer"]["param_groups"]) == 2
    assert last["config"]["freeze"] == "all"


def test_freeze_epochs_unfreezes_and_restarts_the_schedule(data_dir, tmp_path):
    out = tmp_path / "ckpt"
    lr = 0.01
    proc = _finetune(data_dir, out, "--freeze_epochs", "1", "--epoch_size", "2", "--lr", str(lr), "--min_lr", "0",
                     "--scheduler", "cosine_decay")
    total = _total_params()
    log = (out / "train.log").read_text()
    assert f"epochs 2-2 (unfrozen): {total:,} trainable parameters" in log
    classifier = 256 * len(CLASSES) + len(CLASSES)  # test_efficientnet: 256 features
    assert f"trains     epoch 1 linear probe: {classifier:,} of {total:,} parameters train (the head)" in log
    assert f"epoch 2 full: {total:,} of {total:,} parameters train" in log
    assert "unfrozen" in proc.stderr

    rows = _results(out)
    assert [row[0] for row in rows] == ["1", "2"]
    last_step = STEPS_PER_EPOCH - 1  # results.txt shows the lr of each epoch's last step

    def cosine(step: int, steps: int) -> float:
        return lr * 0.5 * (1 + math.cos(math.pi * step / steps))

    # epoch 1: the first phase's schedule; epoch 2: a cosine over the unfrozen phase alone, started again
    assert float(rows[0][1]) == pytest.approx(cosine(last_step, STEPS_PER_EPOCH), rel=1e-4)
    assert float(rows[1][1]) == pytest.approx(cosine(last_step, STEPS_PER_EPOCH), rel=1e-4)
    continued = cosine(STEPS_PER_EPOCH + last_step, 2 * STEPS_PER_EPOCH)
    assert float(rows[1][1]) > 2 * continued


def test_lp_ft_ends_no_lower_than_its_head_only_epoch(tmp_path):
    """Where the ImageNet features already separate the classes (the head-only epoch scores 100 % here),
    unfreezing must not undo it. Batches of 4 make the point sharp: with the old defaults (unfreeze_bn: train,
    unfreeze_lr_scale 1, unfreeze_head_lr_scale 1) this run went 100 -> 66.7 -> 81.2 % (docs/strategies.md)."""
    data = write_image_folder(tmp_path / "images", train_per_class=24, val_per_class=16)
    out = tmp_path / "ckpt"
    _run("--data_dir", str(data), "--model", "tf_efficientnet_lite0", "--pretrained", "true", "--image_resize", "32",
         "--batch_size", "4", "--opt", "momentum", "--lr", "0.01", "--strategy", "lp_ft", "--epoch_size", "3",
         "--num_parallel_workers", "0", "--device", "cpu", "--seed", "3", "--ckpt_save_dir", str(out))
    top1 = [float(row[4]) for row in _results(out)]
    assert top1[0] >= 90, top1  # the probe is already good: the premise of the check
    assert top1[-1] >= top1[0], top1


def test_lr_find_flag(data_dir, tmp_path):
    out = tmp_path / "ckpt"
    proc = _finetune(data_dir, out, "--lr_find", "--lr_find_steps", "8")
    match = re.search(r"^tunecv: suggested lr (\S+)$", proc.stdout, re.MULTILINE)
    assert match, proc.stdout
    suggestion = float(match.group(1))
    assert math.isfinite(suggestion) and suggestion > 0
    assert (out / "lr_find.png").read_bytes()[:8] == PNG_MAGIC
    assert f"suggested lr {match.group(1)}" in proc.stderr  # the log line agrees
    assert not list(out.glob("*.pth")) and not (out / "results.txt").exists()


def test_lr_auto_trains_with_the_suggestion(data_dir, tmp_path):
    out = tmp_path / "ckpt"
    proc = _finetune(data_dir, out, "--lr", "auto", "--lr_find_steps", "8")
    match = re.search(r"lr: auto -> (\S+) \(LR range test\)", proc.stderr)
    assert match, proc.stderr[-3000:]
    logged = match.group(1)
    saved = _config(out)["lr"]
    assert isinstance(saved, float) and math.isfinite(saved) and saved > 0
    assert f"{saved:.3g}" == logged
    assert (out / "lr_find.png").read_bytes()[:8] == PNG_MAGIC
    assert len(_results(out)) == 1
    best = load_checkpoint(out / f"{TINY_MODEL}_best.pth")
    assert best["config"]["lr"] == saved


def test_unknown_freeze_pattern_exit_2_one_line(data_dir, tmp_path):
    out = tmp_path / "ckpt"
    proc = _finetune(data_dir, out, "--freeze_patterns", "blocks.0", "blokcs.9", check=False)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("tunecv: error:")]
    assert len(errors) == 1 and proc.stderr.strip().splitlines()[-1] == errors[0]
    assert "freeze_patterns" in errors[0] and "blokcs.9" in errors[0]
    assert not list(out.glob("*.pth"))


def test_cfg_options_edit_the_config_file(data_dir, tmp_path):
    config = write_yaml(tmp_path / "exp.yaml", {"lr": 0.2, "lr_scales": {"classifier": 2.0}})
    out = tmp_path / "ckpt"
    proc = _finetune(data_dir, out, "--config", str(config), "--cfg-options", "lr=0.05", "lr_scales.conv_stem=0.5")
    saved = _config(out)
    assert saved["lr"] == 0.05
    assert saved["lr_scales"] == {"classifier": 2.0, "conv_stem": 0.5}
    # the rules reached the optimizer: the run summary's group table
    assert re.search(r"^\s+classifier x2\s+1\s+768\s+0\.1\s", proc.stderr, re.MULTILINE), proc.stderr[-3000:]
    assert re.search(r"^\s+conv_stem x0\.5\s+1\s+\S+\s+0\.025\s", proc.stderr, re.MULTILINE), proc.stderr[-3000:]


def test_auto_scale_lr_is_saved_scaled(data_dir, tmp_path):
    out = tmp_path / "ckpt"
    _finetune(data_dir, out, "--lr", "0.01", "--auto_scale_lr", "{base_batch_size:8}")
    saved = _config(out)
    assert saved["lr"] == pytest.approx(0.01 * BATCH / 8)
    assert saved["auto_scale_lr"] is None  # config.yaml repeats the run without scaling twice


def test_validate_ignores_training_rules_and_reads_base_files(data_dir, tmp_path):
    out = tmp_path / "lp_ft"
    _finetune(data_dir, out, "--strategy", "lp_ft", "--epoch_size", "2")
    best = _results(out)
    best_top1 = max(float(row[4]) for row in best)
    base = write_yaml(tmp_path / "base.yaml", {"freeze": "all", "batch_size": 8})
    mine = write_yaml(tmp_path / "mine.yaml", {"_base_": base.name, "num_parallel_workers": 0})
    # freeze: all and epoch_size 1 would be errors for training with freeze_epochs 1; validation does not care
    proc = subprocess.run([sys.executable, "validate.py", "--ckpt_path", str(out / f"{TINY_MODEL}_best.pth"),
                           "--config", str(mine), "--epoch_size", "1", "--cfg-options", "batch_size=2"],
                          cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(rf"top1 {best_top1:.2f}", proc.stdout), proc.stdout


def test_strategy_in_a_child_file_replaces_the_saved_keys(data_dir, tmp_path):
    out = tmp_path / "first"
    _finetune(data_dir, out, "--freeze", "all")
    child = write_yaml(tmp_path / "child.yaml", {"_base_": str(out / "config.yaml"), "strategy": "lp_ft",
                                                  "epoch_size": 2, "ckpt_save_dir": str(tmp_path / "second")})
    _run("--config", str(child))
    log = (tmp_path / "second" / "train.log").read_text()
    assert "epoch 1 linear probe: " in log and "epoch 2 full: " in log
