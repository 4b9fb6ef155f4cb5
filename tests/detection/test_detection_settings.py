"""`task: detection` config: the keys each task reads (any other set is an error, not a silent no-op), the rules
between detection keys, frozen_stages as trainable_backbone_layers, and where annotations and images are found."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tunecv.config import UserError, load_config, to_yaml
from tunecv.config.schema import TASK_KEYS
from tunecv.detection.settings import ann_file, image_dir, trainable_layers
from tunecv.detection.task import Detection

ROOT = Path(__file__).resolve().parents[2]
BASE = {"task": "detection", "model": "fasterrcnn_resnet50_fpn", "data_dir": "/data/coco"}


def _cfg(**values):
    return load_config(None, {**BASE, **values})


def _resolved(**values):
    """The config through the detection task's resolve (the rules that need the detector's spec)."""
    return Detection().resolve_config(_cfg(**values))


@pytest.mark.parametrize("key, value", [("mixup", 0.2), ("label_smoothing", 0.1), ("image_resize", 320),
                                        ("freeze", "all"), ("ema", True), ("compile", True)])
def test_a_classification_key_in_a_detection_run_is_refused(key, value):
    with pytest.raises(UserError, match=f"{key} is a key of classification, which task: detection does not use"):
        _cfg(**{key: value})


@pytest.mark.parametrize("key, value", [("train_ann_file", "a.json"), ("min_size", 512),
                                        ("trainable_backbone_layers", 3), ("best_metric", "segm_mAP")])
def test_a_detection_key_in_a_classification_run_is_refused(key, value):
    with pytest.raises(UserError, match="(is a key of detection, which|is not a metric of) task: classification"):
        load_config(None, {"data_dir": "/data", key: value})


def test_a_detection_config_holds_its_own_keys_only():
    saved = yaml.safe_load(to_yaml(_cfg()))
    assert set(saved) <= TASK_KEYS["detection"] and {"task", "min_size", "val_ann_file"} <= set(saved)
    assert "image_resize" not in saved and "mixup" not in saved
    assert load_config(None, saved).to_flat() == _cfg().to_flat()  # a saved config loads back to itself


@pytest.mark.parametrize("frozen_stages, trainable", [(-1, None), (0, 4), (1, 3), (4, 0)])
def test_frozen_stages_is_trainable_backbone_layers_counted_from_the_stem(frozen_stages, trainable):
    # MMDetection's ResNet frozen_stages 1 (stem + layer1) = torchvision's trainable_backbone_layers 3
    assert trainable_layers(_cfg(frozen_stages=frozen_stages), 5) == trainable


@pytest.mark.parametrize("values, message", [
    ({"frozen_stages": 1, "trainable_backbone_layers": 3}, "set one of them"),
    ({"frozen_stages": 5}, "more than this detector's backbone has"),
    ({"trainable_backbone_layers": 6}, "out of range"),
    ({"best_metric": "segm_mAP"}, "needs masks"),
    ({"best_metric": "top1"}, "best_metric top1 is not a metric of task: detection"),
    ({"min_size": 900, "max_size": 600}, "larger than max_size"),
    ({"min_size": [600, 1400], "max_size": 1333}, "min_size 1400 is larger than max_size"),
    ({"min_size": 16}, "at least 32 px"),
    ({"model": "maskrcnn_r50"}, "did you mean maskrcnn_resnet50_fpn"),
    ({"warmup_iters": 100, "warmup_epochs": 1}, "set one of them"),
    ({"lr": "auto"}, "lr: auto .* works for classification"),
])
def test_detection_rules(values, message):
    with pytest.raises(UserError, match=message):
        _resolved(**values)


def test_best_metric_defaults_to_bbox_map():
    assert Detection().default_metric(_cfg()) == "bbox_mAP"
    assert _resolved(model="maskrcnn_resnet50_fpn", best_metric="segm_mAP").train.best_metric == "segm_mAP"


def test_annotations_and_images_follow_the_coco_layout(tmp_path):
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_val2017.json").write_text("{}")
    cfg = _cfg(data_dir=str(tmp_path), train_split="train2017", val_split="val2017")
    assert ann_file(cfg, "val2017", None) == tmp_path / "annotations" / "instances_val2017.json"
    assert image_dir(cfg, "val2017") == tmp_path / "val2017"
    # Cityscapes: leftImg8bit/<split>/ under data_dir, its own annotation file names
    (tmp_path / "leftImg8bit").mkdir()
    cityscapes = _cfg(data_dir=str(tmp_path), image_root="leftImg8bit",
                      val_ann_file="annotations/instances_val2017.json")
    assert image_dir(cityscapes, "val") == tmp_path / "leftImg8bit" / "val"
    assert ann_file(cityscapes, "val", cityscapes.detection.val_ann_file).is_file()


def test_the_seed_config_finds_cityscapes_under_any_data_dir(tmp_path):
    """image_root leftImg8bit is under data_dir (given on the command line), not beside the config file."""
    (tmp_path / "leftImg8bit" / "train").mkdir(parents=True)
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instancesonly_filtered_gtFine_train.json").write_text("{}")
    cfg = load_config(ROOT / "configs" / "seeds" / "mmdet_cityscapes_maskrcnn.yaml", {"data_dir": str(tmp_path)})
    assert image_dir(cfg, cfg.data.train_split) == tmp_path / "leftImg8bit" / "train"
    assert ann_file(cfg, "train", cfg.detection.train_ann_file).is_file()


def test_the_seed_config_mirrors_the_mmdetection_tutorial():
    cfg = load_config(ROOT / "configs" / "seeds" / "mmdet_cityscapes_maskrcnn.yaml", {})
    assert (cfg.model.task, cfg.model.model, cfg.model.num_classes) == ("detection", "maskrcnn_resnet50_fpn", 8)
    assert (cfg.optim.opt, cfg.optim.lr, cfg.optim.momentum, cfg.optim.weight_decay) == ("sgd", 0.01, 0.9, 1e-4)
    assert cfg.optim.weight_decay_filter == "disable"
    assert (cfg.sched.warmup_iters, cfg.sched.warmup_factor) == (500, 0.001)
    assert (cfg.sched.scheduler, cfg.sched.multi_step_decay_milestones, cfg.train.epoch_size) == \
        ("multi_step_decay", (7,), 8)
    # MMDetection's Cityscapes scales: shorter side 800-1024 in training, 1024 in testing, longer side <= 2048
    assert (cfg.detection.min_size[0], cfg.detection.min_size[-1], cfg.detection.max_size) == (800, 1024, 2048)
