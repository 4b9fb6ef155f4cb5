"""The MMDetection seed's claim, offline: a detector trained on one dataset fine-tunes to new classes better than
training from scratch at the same budget. Shapes set A (circle, square, triangle) trains a detector from
scratch; set B (star, cross: other classes) is then trained for the same short schedule twice, from the A
checkpoint with only the class head replaced (the seed's roi_head num_classes change) and from scratch.

    python -m bench.detection_transfer                    # ~15 min on a 2-core CPU
    python -m bench.detection_transfer --epochs_a 4 --epochs_b 2 --images_a 40 --images_b 20   (a quick look)

Prints the bbox mAP / mAP50 on B's val set for both, and the time of each run.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from tools.make_shapes import make_shapes
from tunecv.detection.coco import CocoDetection, collate, read_coco
from tunecv.detection.engine import create_step_schedule, evaluate, train_one_epoch
from tunecv.detection.models import create_detector, load_detector_weights
from tunecv.runtime import Compute

MODEL = "fasterrcnn_mobilenet_v3_large_fpn"


def run(root: Path, classes: list[str], epochs: int, size: int, lr: float, seed: int,
        init: dict[str, torch.Tensor] | None) -> tuple[dict[str, float], dict[str, torch.Tensor], float]:
    """Train on the shapes under `root` (from `init` with the head swapped, or from scratch); (val mAP, weights,
    seconds)."""
    torch.manual_seed(seed)
    train_index = read_coco(root / "annotations" / "instances_train.json")
    val_index = read_coco(root / "annotations" / "instances_val.json")
    train = DataLoader(CocoDetection(train_index, root / "train", hflip=0.5), batch_size=4, shuffle=True,
                       collate_fn=collate)
    val = DataLoader(CocoDetection(val_index, root / "val"), batch_size=8, collate_fn=collate)
    # BatchNorm trains: frozen statistics suit loaded ImageNet/COCO weights, not a backbone that starts random
    model = create_detector(MODEL, len(classes), min_size=size, max_size=size, frozen_bn=False)
    if init is not None:
        load_detector_weights(model, MODEL, init, source="the set A checkpoint")
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr, momentum=0.9,
                                weight_decay=1e-4)
    # the seed's shape of schedule: linear warm-up, one step down for the last epoch
    schedule = create_step_schedule(optimizer, len(train), warmup_iters=min(100, len(train) * epochs // 4),
                                    warmup_ratio=0.001, milestones_epochs=[max(epochs - 1, 1)])
    compute, start = Compute(torch.device("cpu")), time.perf_counter()
    for epoch in range(1, epochs + 1):
        stats = train_one_epoch(model, train, optimizer, schedule, compute, epoch)
        print(f"  epoch {epoch}: loss {stats.loss:.3f} ({stats.images / stats.seconds:.1f} img/s)", flush=True)
    metrics, _ = evaluate(model, val, compute, val_index)
    return metrics, model.state_dict(), time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.detection_transfer", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images_a", type=int, default=120)
    parser.add_argument("--images_b", type=int, default=60)
    parser.add_argument("--epochs_a", type=int, default=16)
    parser.add_argument("--epochs_b", type=int, default=6)
    parser.add_argument("--size", type=int, default=128, help="image side in px")
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        shapes_a, shapes_b = Path(tmp) / "a", Path(tmp) / "b"
        make_shapes(shapes_a, ["circle", "square", "triangle"], args.images_a, 40, args.size, seed=args.seed)
        make_shapes(shapes_b, ["star", "cross"], args.images_b, 40, args.size, seed=args.seed + 1)
        print(f"set A: {args.images_a} images, {args.epochs_a} epochs from scratch", flush=True)
        a_metrics, a_weights, a_seconds = run(shapes_a, ["circle", "square", "triangle"], args.epochs_a, args.size,
                                              args.lr, args.seed, None)
        rows = [("A from scratch", a_metrics, a_seconds)]
        for label, init in (("B from the A checkpoint (head swapped)", a_weights), ("B from scratch", None)):
            print(f"{label}: {args.images_b} images, {args.epochs_b} epochs", flush=True)
            metrics, _, seconds = run(shapes_b, ["star", "cross"], args.epochs_b, args.size, args.lr, args.seed,
                                      init)
            rows.append((label, metrics, seconds))
    print(f"\n{MODEL}, {args.size} px, SGD lr {args.lr}, batch 4")
    print(f"{'run':<42} {'bbox_mAP':>8} {'bbox_mAP50':>10} {'time_s':>7}")
    for label, metrics, seconds in rows:
        print(f"{label:<42} {metrics['bbox_mAP']:>8.1f} {metrics['bbox_mAP50']:>10.1f} {seconds:>7.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
