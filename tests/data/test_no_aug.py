"""no_aug: the training transform is the evaluation resize + centre crop plus the flips, nothing random else."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from conftest import TINY_MODEL, run_config
from tunecv.data.transforms import create_transforms


def _cfg(data_dir: Path, **overrides):
    return run_config({"data_dir": str(data_dir), "model": TINY_MODEL, "image_resize": 32, **overrides})


def _image(size=(41, 57)) -> Image.Image:
    return Image.effect_mandelbrot(size, (-2, -1.5, 1, 1.5), 60).convert("RGB")


@pytest.mark.parametrize("uint8", [False, True])
def test_no_aug_without_flips_is_the_eval_transform(tmp_path, uint8):
    cfg = _cfg(tmp_path, no_aug=True, hflip=0.0, vflip=0.0, scale=[0.08, 0.2], color_jitter=[0.4])
    train = create_transforms(cfg.data, is_training=True, uint8=uint8)
    evaluation = create_transforms(cfg.data, is_training=False, uint8=uint8)
    torch.manual_seed(0)
    for size in [(41, 57), (64, 30), (32, 32)]:
        image = _image(size)
        outputs = [train(image) for _ in range(3)]
        assert all(torch.equal(out, evaluation(image)) for out in outputs)
    augmented = create_transforms(_cfg(tmp_path, hflip=0.0, scale=[0.08, 0.2]).data, is_training=True)
    assert not torch.equal(augmented(_image()), evaluation(_image()))  # without no_aug it is random


@pytest.mark.parametrize("hflip, vflip, dims", [(1.0, 0.0, [-1]), (0.0, 1.0, [-2]), (1.0, 1.0, [-2, -1])])
def test_no_aug_flips_after_the_centre_crop(tmp_path, hflip, vflip, dims):
    cfg = _cfg(tmp_path, no_aug=True, hflip=hflip, vflip=vflip)
    train = create_transforms(cfg.data, is_training=True)
    evaluation = create_transforms(cfg.data, is_training=False)
    image = _image()
    assert torch.equal(train(image), evaluation(image).flip(dims))
    assert torch.equal(evaluation(image), create_transforms(_cfg(tmp_path).data, is_training=False)(image))


def test_no_aug_half_flips(tmp_path):
    cfg = _cfg(tmp_path, no_aug=True, hflip=0.5)
    train, evaluation = create_transforms(cfg.data, is_training=True), create_transforms(cfg.data, False)
    image = _image()
    plain, flipped = evaluation(image), evaluation(image).flip(-1)
    torch.manual_seed(0)
    outputs = [train(image) for _ in range(40)]
    assert all(torch.equal(o, plain) or torch.equal(o, flipped) for o in outputs)
    assert 8 < sum(torch.equal(o, flipped) for o in outputs) < 32
