"""The resolve step: the values derived from the model (normalisation, interpolation, crop), the data (classes,
num_classes), the strategy (phases) and the run (folder, lr, caches), each owned by `tunecv.resolve` and the task."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from conftest import CLASSES
from tunecv.config import UserError, load_config
from tunecv.finetune.phases import Phase
from tunecv.resolve import check_phases_kept, resolve
from tunecv.tasks.classification import Classification


@pytest.fixture
def data_dir(tmp_path: Path) -> str:
    return str(tmp_path)


def _input(values: dict):
    """The config as the classification task resolves it from the model's pretrained config."""
    return Classification().resolve_config(load_config(None, values))


def test_mean_std_on_0_255_scale_normalised(data_dir):
    cfg = _input({"data_dir": data_dir, "mean": [123.675, 116.28, 103.53],
                             "std": [58.395, 57.12, 57.375]})
    assert cfg.data.mean == pytest.approx((0.485, 0.456, 0.406), abs=1e-6)
    assert cfg.data.std == pytest.approx((0.229, 0.224, 0.225), abs=1e-6)


def test_mean_std_on_0_1_scale_kept(data_dir):
    cfg = _input({"data_dir": data_dir, "mean": "0.1,0.2,0.3", "std": "0.4,0.5,0.6"})
    assert cfg.data.mean == (0.1, 0.2, 0.3) and cfg.data.std == (0.4, 0.5, 0.6)


def test_mean_on_0_255_scale_keeps_default_std(data_dir):
    cfg = _input({"data_dir": data_dir, "model": "tf_efficientnet_lite0",
                             "mean": [127.5, 127.5, 127.5]})
    assert cfg.data.mean == pytest.approx((0.5, 0.5, 0.5))
    assert cfg.data.std == pytest.approx((0.5, 0.5, 0.5))


def test_data_values_default_from_model(data_dir):
    cfg = _input({"data_dir": data_dir, "model": "tf_efficientnet_lite0"})
    assert cfg.data.mean == (0.5, 0.5, 0.5) and cfg.data.std == (0.5, 0.5, 0.5)
    assert cfg.data.interpolation == "bicubic"
    assert cfg.data.crop_pct == pytest.approx(0.875)
    other = _input({"data_dir": data_dir, "model": "test_efficientnet"})
    assert other.data.mean == pytest.approx((0.485, 0.456, 0.406)) and other.data.crop_pct == pytest.approx(0.95)


def test_explicit_data_values_beat_model_defaults(data_dir):
    cfg = _input({"data_dir": data_dir, "model": "tf_efficientnet_lite0", "interpolation": "bilinear",
                             "crop_pct": 1.0})
    assert cfg.data.interpolation == "bilinear" and cfg.data.crop_pct == 1.0


def test_mindcv_model_alias_accepted(data_dir):
    cfg = _input({"data_dir": data_dir, "model": "mobilenet_v3_small_100"})
    assert cfg.model.model == "mobilenet_v3_small_100"
    assert cfg.data.interpolation == "bicubic"  # from timm's mobilenetv3_small_100


def test_a_fixed_size_model_takes_its_size_when_image_resize_is_left_out(data_dir, caplog):
    caplog.set_level("INFO")
    cfg = _input({"data_dir": data_dir, "model": "crossvit_9"})  # MindCV's name; timm's crossvit_9_240
    assert cfg.data.image_resize == 240
    assert "crossvit_9 takes 240 px inputs, so image_resize is 240" in caplog.text
    assert _input({"data_dir": data_dir, "model": "crossvit_9", "image_resize": 240}).data.image_resize == 240
    assert _input({"data_dir": data_dir, "model": "resnet18"}).data.image_resize == 224


def test_a_fixed_size_model_refuses_another_size_set_on_purpose(data_dir):
    with pytest.raises(UserError, match="takes 240 px inputs only; set image_resize 240 or leave it out"):
        _input({"data_dir": data_dir, "model": "crossvit_9", "image_resize": 160})


def test_a_vit_set_to_another_size_on_purpose_resamples_its_position_embeddings(data_dir, caplog):
    import torch

    from tunecv.models.factory import create_model

    caplog.set_level("INFO")
    cfg = _input({"data_dir": data_dir, "model": "vit_tiny_patch16_224", "image_resize": 96})
    assert cfg.data.image_resize == 96 and "resampled from its 224 px grid" in caplog.text
    model = create_model(cfg.model, num_classes=3, input_size=96).eval()
    default = create_model(cfg.model, num_classes=3)
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in default.state_dict().items()}
    with torch.no_grad():
        assert model(torch.randn(1, 3, 96, 96)).shape == (1, 3)  # the same weights fit: pretrained ones load


def test_unknown_model_lists_close_names(data_dir):
    with pytest.raises(UserError) as info:
        _input({"data_dir": data_dir, "model": "resnet5O"})
    assert "resnet5O" in str(info.value) and "resnet50" in str(info.value)


def test_re_value_random_erases_with_noise(data_dir):
    from PIL import Image

    from tunecv.data import create_transforms

    cfg = _input({"data_dir": data_dir, "model": "test_efficientnet", "image_resize": 32,
                             "re_prob": 1.0, "re_value": "random", "hflip": 0, "color_jitter": None,
                             "scale": [1.0, 1.0], "ratio": [1.0, 1.0]}).data
    out = create_transforms(cfg, is_training=True)(Image.new("RGB", (32, 32), (128, 128, 128)))
    assert len(out.unique()) > 10  # a flat grey image gains per-pixel noise where it was erased


def _run(tiny_overrides: dict, range_test=None, **overrides):
    cfg = load_config(None, {**tiny_overrides, **overrides})
    return resolve(cfg, Classification(), new_run=False, range_test=range_test)


def test_the_run_holds_every_derived_value(tiny_overrides):
    run = _run(tiny_overrides)
    assert run.classes == CLASSES and run.cfg.model.num_classes == len(CLASSES)
    assert run.cfg.data.dataset == "folder" and run.cfg.data.mean == pytest.approx((0.485, 0.456, 0.406))
    assert run.cfg.train.best_metric == "top1" and run.out_dir == Path(tiny_overrides["ckpt_save_dir"])
    assert (run.cfg.train.resume, run.cfg.train.resume_force, run.cfg.train.overwrite) == (None, False, False)
    assert len(run.phases) == 1 and not run.phases[0].frozen and not run.cache_features
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.cfg = run.cfg  # later stages read it; none rewrites it


def test_num_classes_must_match_the_data(tiny_overrides):
    assert _run(tiny_overrides, num_classes=3).cfg.model.num_classes == 3
    with pytest.raises(UserError, match="train has 3 classes; pass --num_classes 3, or remove num_classes from the"):
        _run(tiny_overrides, num_classes=5)


def test_the_strategy_expands_to_its_phases(tiny_overrides):
    two = _run(tiny_overrides, strategy="lp_ft", epoch_size=3).phases
    assert [(p.start, p.end) for p in two] == [(1, 1), (2, 3)]
    assert two[0].frozen and not two[1].frozen and two[1].restart
    gradual = _run(tiny_overrides, strategy="gradual", epoch_size=4).phases
    assert len(gradual) > 2 and gradual[-1].label == "all stages"
    assert all(later.frozen < earlier.frozen for earlier, later in zip(gradual, gradual[1:]))


def test_a_linear_probe_on_the_evaluation_transform_caches_its_features_not_its_images(tiny_overrides):
    run = _run(tiny_overrides, strategy="linear_probe", no_aug=True)
    assert run.cache_features and run.cache_images == "none"
    assert not _run(tiny_overrides, strategy="linear_probe").cache_features  # random crops: the features change
    assert _run(tiny_overrides, cache_images="ram").cache_images == "ram"


def test_the_lr_is_auto_scaled_or_found_once(tiny_overrides):
    scaled = _run(tiny_overrides, lr=0.1, auto_scale_lr={"base_batch_size": 8})
    assert scaled.cfg.optim.lr == pytest.approx(0.1 * 4 / 8) and scaled.cfg.optim.auto_scale_lr is None
    probes = []
    found = _run(tiny_overrides, range_test=lambda probe: probes.append(probe) or 0.0123, lr="auto")
    assert found.cfg.optim.lr == 0.0123 and len(probes) == 1
    assert probes[0].classes == found.classes and probes[0].cfg.optim.lr != "auto"  # resolved but for the lr
    with pytest.raises(UserError, match="lr: auto needs the LR range test"):
        _run(tiny_overrides, lr="auto")


def test_a_resolved_config_resolves_to_itself(tiny_overrides):
    """config.yaml is the Run's config: training from it again is the same run."""
    run = _run(tiny_overrides, strategy="lp_ft", epoch_size=2, cache_images="none")
    again = resolve(load_config(None, run.cfg.to_flat()), Classification(), new_run=False)
    assert again.cfg == run.cfg and again.phases == run.phases and again.classes == run.classes


class _Halves:
    """A task whose two phases split the run at its middle (as gradual unfreezing moves with epoch_size)."""

    def plan_phases(self, cfg, num_classes):
        half = cfg.train.epoch_size // 2
        return [Phase(1, half, frozenset({"backbone"})), Phase(half + 1, cfg.train.epoch_size, frozenset())]


class _ProbeFirst:
    def plan_phases(self, cfg, num_classes):
        return [Phase(1, 1, frozenset({"backbone"})), Phase(2, cfg.train.epoch_size, frozenset())]


def test_an_extended_run_keeps_the_phases_it_has_begun():
    checkpoint = {"config": {"epoch_size": 4}, "epoch": 2, "epoch_progress": None}
    longer = load_config(None, {"epoch_size": 6, "dataset": "digits"})
    with pytest.raises(UserError, match="with epoch_size 6 instead of 4, this run's phases would move "
                                        r"\(epoch 3 would train other layers\); keep epoch_size 4"):
        check_phases_kept(_Halves(), longer, 2, _Halves().plan_phases(longer, 2), checkpoint)
    check_phases_kept(_ProbeFirst(), longer, 2, _ProbeFirst().plan_phases(longer, 2), checkpoint)
    same = load_config(None, {"epoch_size": 4, "dataset": "digits"})
    check_phases_kept(_Halves(), same, 2, _Halves().plan_phases(same, 2), checkpoint)
