"""The shipped configs: every preset trains end to end through `_base_`, every seed config resolves, and the
MindCV Aircraft strategies freeze and scale exactly the layers the tutorial names."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import plan_for, write_yaml
from tunecv.config import load_config
from tunecv.finetune.phases import Plan
from tunecv.models.factory import create_model
from tunecv.scripts.finetune import run

ROOT = Path(__file__).resolve().parents[2]
PRESETS = sorted((ROOT / "configs" / "presets").glob("*.yaml"))
SEEDS = sorted(p for p in (ROOT / "configs" / "seeds").glob("*.yaml"))
# a small member of each preset's family, so the recipe runs on CPU in seconds
FAMILY_MODELS = {"efficientnet": ("test_efficientnet", 32), "resnet": ("resnet10t", 32),
                 "convnext": ("convnext_atto", 32), "vit": ("vit_tiny_patch16_224", 224)}


def test_every_family_has_a_preset():
    assert {p.stem for p in PRESETS} == set(FAMILY_MODELS)


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_preset_trains_through_base(preset, tiny_image_folder, tmp_path):
    model, size = FAMILY_MODELS[preset.stem]
    config = write_yaml(tmp_path / "mine.yaml",
                        {"_base_": f"presets/{preset.name}", "data_dir": str(tiny_image_folder)})
    cfg = load_config(config, {"model": model, "pretrained": False, "image_resize": size, "batch_size": 4,
                               "epoch_size": 1, "num_parallel_workers": 0, "device": "cpu", "warmup_epochs": 0,
                               "ckpt_save_dir": str(tmp_path / "ckpt")})
    preset_values = load_config(preset, {"data_dir": str(tiny_image_folder)})
    assert (cfg.optim.opt, cfg.optim.lr, cfg.finetune.layer_decay) == \
        (preset_values.optim.opt, preset_values.optim.lr, preset_values.finetune.layer_decay)
    result = run(cfg)
    assert result.history[0]["top1"] is not None and Path(result.best.path).is_file()


@pytest.mark.parametrize("config", SEEDS, ids=lambda p: p.stem)
def test_seed_config_resolves(config, tmp_path):
    cfg = load_config(config, {"data_dir": str(tmp_path)})
    assert cfg.optim.lr > 0 and cfg.train.epoch_size >= 1


def _aircraft_plan(name: str) -> tuple[Plan, dict]:
    cfg = load_config(ROOT / "configs" / "seeds" / f"mindcv_aircraft_{name}.yaml", {"data_dir": "/tmp"})
    assert (cfg.loader.batch_size, cfg.data.image_resize, cfg.data.auto_augment, cfg.optim.lr, cfg.train.epoch_size) \
        == (8, 600, "rand-m7-mstd0.5", 0.002, 50)
    plan = plan_for(cfg, create_model(cfg.model, num_classes=100), steps=10)
    plan.enter(1)
    lrs = {name: group["initial_lr"] for group in plan.optimizer.param_groups for name in group["param_names"]}
    return plan, lrs


def test_mindcv_frozen_shallow_freezes_features_0_to_6():
    plan, lrs = _aircraft_plan("frozen_shallow")
    frozen = {n for n, p in plan.model.named_parameters() if not p.requires_grad}
    prefixes = ("conv_stem.", "bn1.", "blocks.0.0.", "blocks.1.0.", "blocks.1.1.", "blocks.2.0.")
    assert frozen and all(n.startswith(prefixes) for n in frozen)
    assert {n for n, _ in plan.model.named_parameters() if n.startswith(prefixes)} == frozen
    assert "blocks.2.1.conv_pw.weight" in lrs


def test_mindcv_deep_lr_scales_features_13_to_15():
    _, lrs = _aircraft_plan("deep_lr")
    assert lrs["blocks.4.2.conv_pw.weight"] == pytest.approx(0.002 * 1.05)  # features.13: the last block
    assert lrs["blocks.5.0.conv.weight"] == pytest.approx(0.002 * 1.1)  # features.14: the last 1x1 conv
    assert lrs["blocks.5.0.bn1.weight"] == pytest.approx(0.002 * 1.15)  # features.15: its BN
    assert lrs["blocks.4.1.conv_pw.weight"] == pytest.approx(0.002)
    assert lrs["classifier.weight"] == pytest.approx(0.002)


def test_mindcv_head_lr_and_frozen_all():
    _, lrs = _aircraft_plan("head_lr")
    assert lrs["classifier.weight"] == lrs["conv_head.weight"] == pytest.approx(0.0024)
    assert lrs["blocks.5.0.conv.weight"] == pytest.approx(0.002)
    _, lrs = _aircraft_plan("frozen_all")
    assert set(lrs) == {"classifier.weight", "classifier.bias"}
