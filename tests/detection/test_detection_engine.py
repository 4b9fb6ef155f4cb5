"""Detection steps: the seed's schedule (linear warm-up in iterations, step at an epoch) and a short real training
run of a small detector on generated shapes whose loss falls and whose COCO mAP is finite."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.data import DataLoader

from tools.make_shapes import make_shapes
from tunecv.config import SchedConfig, UserError, load_config
from tunecv.detection.coco import CocoDetection, HorizontalFlip, collate, read_coco
from tunecv.detection.engine import detection_loss, evaluate
from tunecv.detection.models import create_detector
from tunecv.optim.schedulers import create_scheduler
from tunecv.train.engine import Trainer, train_one_epoch
from tunecv.utils.runtime import Compute


def test_the_seeds_schedule_linear_warmup_in_iterations_then_a_step_at_epoch_7():
    """MMDetection's warmup='linear', warmup_iters, warmup_ratio and step [7] through tunecv's scheduler."""
    cfg = load_config(None, {"task": "detection", "model": "maskrcnn_resnet50_fpn", "data_dir": ".",
                             "warmup": "linear", "warmup_iters": 5, "warmup_ratio": 0.1,
                             "scheduler": "multi_step_decay", "milestones": [7], "epoch_size": 8})
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.02)
    schedule = create_scheduler(optimizer, cfg.sched, lr=0.02, steps_per_epoch=10, epochs=8)
    lrs = []
    for _ in range(80):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert lrs[0] == pytest.approx(0.02 * (0.1 + 0.9 / 5)) and lrs[4] == pytest.approx(0.02)
    assert lrs[0] < lrs[2] < lrs[4]
    assert lrs[69] == pytest.approx(0.02) and lrs[70] == pytest.approx(0.002)  # epoch 8 (steps 70-79) is lowered


def test_warmup_other_than_linear_is_refused():
    with pytest.raises(UserError, match="warmup"):
        load_config(None, {"data_dir": ".", "warmup": "exp"})


def test_a_short_run_learns(tmp_path):
    torch.manual_seed(0)
    make_shapes(tmp_path, ["circle", "square"], train=16, val=6, size=96, max_shapes=2, seed=0)
    train = CocoDetection(read_coco(tmp_path / "annotations" / "instances_train.json"), tmp_path / "train",
                          transform=HorizontalFlip(0.5))
    val_index = read_coco(tmp_path / "annotations" / "instances_val.json")
    val = CocoDetection(val_index, tmp_path / "val")
    loader = DataLoader(train, batch_size=4, shuffle=True, collate_fn=collate)
    model = create_detector("fasterrcnn_mobilenet_v3_large_fpn", 2, min_size=96, max_size=96)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.02, momentum=0.9,
                                weight_decay=1e-4)
    schedule = create_scheduler(optimizer, SchedConfig(scheduler="constant", warmup_iters=4, warmup_factor=0.1),
                                lr=0.02, steps_per_epoch=len(loader), epochs=3)
    compute = Compute(torch.device("cpu"))
    trainer = Trainer(loss_fn=None, compute=compute, num_classes=2, freeze_bn=False, batch_loss=detection_loss)
    epochs = [train_one_epoch(model, loader, optimizer, schedule, trainer, epoch) for epoch in (1, 2, 3)]
    assert epochs[-1].loss < epochs[0].loss and set(epochs[0].parts) >= {"loss_classifier", "loss_objectness"}
    assert epochs[0].images == 16 and epochs[-1].lr == pytest.approx(0.02)
    scores = evaluate(model, DataLoader(val, batch_size=3, collate_fn=collate), compute, val_index)
    metrics, detections = scores.metrics, scores.detections
    assert [name for name, _ in scores.per_class] == ["circle", "square"]
    assert set(metrics) == {"bbox_mAP", "bbox_mAP50"} and all(math.isfinite(v) for v in metrics.values())
    assert all(d["category_id"] in (11, 21) for d in detections)
