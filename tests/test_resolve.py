"""The resolve step: the values derived from the model (normalisation, interpolation, crop), the data (classes,
num_classes), the strategy (phases) and the run (folder, lr, caches), each owned by `tunecv.resolve` and the task."""

from __future__ import annotations

from pathlib import Path

import pytest

from tunecv.config import UserError, load_config
from tunecv.tasks.classification import Classification


@pytest.fixture
def data_dir(tmp_path: Path) -> str:
    return str(tmp_path)


def _input(values: dict):
    """The config as the classification task resolves it from the model's pretrained config."""
    return Classification().resolve_config(load_config(None, {"dataset": "folder", **values}))


def test_mean_std_on_0_255_scale_normalised(data_dir):
    cfg = _input( {"data_dir": data_dir, "mean": [123.675, 116.28, 103.53],
                             "std": [58.395, 57.12, 57.375]})
    assert cfg.data.mean == pytest.approx((0.485, 0.456, 0.406), abs=1e-6)
    assert cfg.data.std == pytest.approx((0.229, 0.224, 0.225), abs=1e-6)


def test_mean_std_on_0_1_scale_kept(data_dir):
    cfg = _input( {"data_dir": data_dir, "mean": "0.1,0.2,0.3", "std": "0.4,0.5,0.6"})
    assert cfg.data.mean == (0.1, 0.2, 0.3) and cfg.data.std == (0.4, 0.5, 0.6)


def test_mean_on_0_255_scale_keeps_default_std(data_dir):
    cfg = _input( {"data_dir": data_dir, "model": "tf_efficientnet_lite0",
                             "mean": [127.5, 127.5, 127.5]})
    assert cfg.data.mean == pytest.approx((0.5, 0.5, 0.5))
    assert cfg.data.std == pytest.approx((0.5, 0.5, 0.5))


def test_data_values_default_from_model(data_dir):
    cfg = _input( {"data_dir": data_dir, "model": "tf_efficientnet_lite0"})
    assert cfg.data.mean == (0.5, 0.5, 0.5) and cfg.data.std == (0.5, 0.5, 0.5)
    assert cfg.data.interpolation == "bicubic"
    assert cfg.data.crop_pct == pytest.approx(0.875)
    other = _input( {"data_dir": data_dir, "model": "test_efficientnet"})
    assert other.data.mean == pytest.approx((0.485, 0.456, 0.406)) and other.data.crop_pct == pytest.approx(0.95)


def test_explicit_data_values_beat_model_defaults(data_dir):
    cfg = _input( {"data_dir": data_dir, "model": "tf_efficientnet_lite0", "interpolation": "bilinear",
                             "crop_pct": 1.0})
    assert cfg.data.interpolation == "bilinear" and cfg.data.crop_pct == 1.0


def test_mindcv_model_alias_accepted(data_dir):
    cfg = _input( {"data_dir": data_dir, "model": "mobilenet_v3_small_100"})
    assert cfg.model.model == "mobilenet_v3_small_100"
    assert cfg.data.interpolation == "bicubic"  # from timm's mobilenetv3_small_100


def test_unknown_model_lists_close_names(data_dir):
    with pytest.raises(UserError) as info:
        _input( {"data_dir": data_dir, "model": "resnet5O"})
    assert "resnet5O" in str(info.value) and "resnet50" in str(info.value)


def test_re_value_random_erases_with_noise(data_dir):
    from PIL import Image

    from tunecv.data import create_transforms

    cfg = _input( {"data_dir": data_dir, "model": "test_efficientnet", "image_resize": 32,
                             "re_prob": 1.0, "re_value": "random", "hflip": 0, "color_jitter": None,
                             "scale": [1.0, 1.0], "ratio": [1.0, 1.0]}).data
    out = create_transforms(cfg, is_training=True)(Image.new("RGB", (32, 32), (128, 128, 128)))
    assert len(out.unique()) > 10  # a flat grey image gains per-pixel noise where it was erased
