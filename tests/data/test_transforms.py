"""Transforms: tensors of (3, S, S), normalised with the config's mean/std; eval is deterministic."""

from __future__ import annotations

import math
import random

import pytest
import torch
from PIL import Image
from timm.data.random_erasing import RandomErasing

from conftest import run_config
from tunecv.data.transforms import create_transforms, eval_resize, random_erasing
from tunecv.errors import UserError


def _data_cfg(tmp_path, **overrides):
    return run_config({"data_dir": str(tmp_path), "model": "test_efficientnet", **overrides}).data


@pytest.mark.parametrize("is_training", [True, False])
@pytest.mark.parametrize("size", [32, 48])
def test_output_shape(tmp_path, is_training, size):
    transform = create_transforms(_data_cfg(tmp_path, image_resize=size), is_training=is_training)
    for image_size in [(20, 60), (100, 40)]:
        out = transform(Image.new("RGB", image_size, (255, 0, 0)))
        assert isinstance(out, torch.Tensor) and out.shape == (3, size, size) and out.dtype == torch.float32


def test_eval_normalises_with_config_mean_std(tmp_path):
    cfg = _data_cfg(tmp_path, image_resize=16, mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25])
    out = create_transforms(cfg, is_training=False)(Image.new("RGB", (30, 30), (255, 0, 128)))
    assert out[0].mean().item() == pytest.approx((1.0 - 0.5) / 0.25, abs=1e-3)
    assert out[1].mean().item() == pytest.approx((0.0 - 0.5) / 0.25, abs=1e-3)


def test_eval_is_deterministic_train_is_random(tmp_path):
    cfg = _data_cfg(tmp_path, image_resize=32, scale=[0.2, 1.0])
    image = Image.effect_mandelbrot((64, 64), (-2, -1.5, 1, 1.5), 50).convert("RGB")
    evaluation = create_transforms(cfg, is_training=False)
    assert torch.equal(evaluation(image), evaluation(image))
    train = create_transforms(cfg, is_training=True)
    torch.manual_seed(0)
    outputs = [train(image) for _ in range(4)]
    assert any(not torch.equal(outputs[0], other) for other in outputs[1:])


def test_random_interpolation_allowed_for_eval(tmp_path):
    transform = create_transforms(_data_cfg(tmp_path, image_resize=24, interpolation="random"), is_training=False)
    assert transform(Image.new("RGB", (50, 30))).shape == (3, 24, 24)



def test_timm_auto_augment_policy(tmp_path):
    cfg = _data_cfg(tmp_path, image_resize=32, auto_augment="rand-m9-mstd0.5-inc1")
    assert create_transforms(cfg, is_training=True)(Image.new("RGB", (40, 40))).shape == (3, 32, 32)


@pytest.mark.parametrize("policy", ["randaug-m7-mstd0.5", "randaug-m9-mstd0.5-inc1", "autoaug"])
def test_mindcv_auto_augment_policies(tmp_path, policy):
    cfg = _data_cfg(tmp_path, image_resize=32, auto_augment=policy)
    assert create_transforms(cfg, is_training=True)(Image.new("RGB", (40, 40))).shape == (3, 32, 32)


def test_invalid_auto_augment_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="auto_augment"):
        _data_cfg(tmp_path, auto_augment="sometimes")


@pytest.mark.parametrize("interpolation, crop_pct, expected", [("bicubic", 0.875, (256, "bicubic")),
                                                                ("random", 1.0, (224, "bilinear"))])
def test_eval_resize_is_what_the_eval_transform_does(tmp_path, interpolation, crop_pct, expected):
    cfg = _data_cfg(tmp_path, image_resize=224, interpolation=interpolation, crop_pct=crop_pct)
    assert eval_resize(cfg) == expected
    image = Image.new("RGB", (400, 300))
    assert create_transforms(cfg, is_training=False).transforms[0](image).size[1] == expected[0]  # shorter side


@pytest.mark.parametrize("attempts, low, high", [(1, 0.35, 0.7), (10, 0.95, 1.0)])
def test_re_max_attempts_is_how_many_boxes_are_drawn_until_one_fits(tmp_path, attempts, low, high):
    """A box of 30 % of the image fits for about half the aspect ratios in [0.1, 10]: one try erases about half
    the images, ten tries nearly all (timm's fixed 10)."""
    cfg = _data_cfg(tmp_path, image_resize=32, re_prob=1.0, re_scale=[0.3, 0.3], re_ratio=[0.1, 10.0],
                    re_max_attempts=attempts)
    erasing = random_erasing(cfg, "cpu")
    random.seed(0)
    erased = sum(bool((erasing(torch.ones(3, 32, 32)) == 0).any()) for _ in range(300)) / 300
    assert low <= erased <= high


def test_crop_pct_above_one_is_mindcv_s_whole_image_with_a_black_border(tmp_path):
    """MindCV: resize to floor(image_resize / crop_pct), centre-crop image_resize (the crop pads)."""
    cfg = _data_cfg(tmp_path, image_resize=64, crop_pct=1.15, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    assert eval_resize(cfg)[0] == 55  # floor(64 / 1.15)
    out = create_transforms(cfg, is_training=False)(Image.new("RGB", (80, 80), (255, 255, 255)))
    assert out.shape == (3, 64, 64)
    assert torch.all(out[:, 0, :] == -1.0) and torch.all(out[:, :, 0] == -1.0)  # the border: black, normalised
    assert torch.all(out[:, 32, 32] == 1.0)  # the image: white


def test_random_erasing_takes_mindcv_s_area_and_aspect_ranges(tmp_path):
    cfg = _data_cfg(tmp_path, image_resize=32, re_prob=1.0, re_scale=[0.1, 0.2], re_ratio=[0.5, 2.0])
    erasing = create_transforms(cfg, is_training=True).transforms[-1]
    assert isinstance(erasing, RandomErasing) and (erasing.min_area, erasing.max_area) == (0.1, 0.2)
    assert erasing.log_aspect_ratio == pytest.approx((math.log(0.5), math.log(2.0)))
    image = Image.new("RGB", (32, 32), (255, 255, 255))
    torch.manual_seed(0)
    erased = [(create_transforms(cfg, is_training=True)(image) == 0).all(dim=0).float().mean().item()
              for _ in range(20)]
    assert all(0.05 <= share <= 0.25 for share in erased)  # the erased share of the image stays in re_scale
    on_device = random_erasing(cfg, "cpu")
    assert (on_device.min_area, on_device.max_area) == (0.1, 0.2) and on_device.mode == "const"
