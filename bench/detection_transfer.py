"""The MMDetection seed's claim, offline, through finetune.py: a detector trained on one dataset fine-tunes to new
classes better than training from scratch at the same budget. Shapes set A (circle, square, triangle) trains a
detector from scratch (configs/shapes_detection.yaml); set B (star, cross: other classes) is then trained for the
same short schedule twice: with `load_from` the A checkpoint (the class head replaced, as the seed's roi_head
num_classes change does; backbone BatchNorm frozen, as for any loaded weights) and from scratch.

    python -m bench.detection_transfer                    # ~15 min on a 2-core CPU
    python -m bench.detection_transfer --epochs_a 4 --epochs_b 2 --images_a 40 --images_b 20   (a quick look)

Prints the best bbox mAP / mAP50 on B's val set for both, and the time of each run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tools.make_shapes import make_shapes

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "shapes_detection.yaml"
MODEL = "fasterrcnn_mobilenet_v3_large_fpn"


def finetune(data: Path, out: Path, epochs: int, size: int, extra: list[str]) -> tuple[dict, float]:
    """One finetune.py run on `data`; (its best epoch's row, seconds)."""
    steps = len(list((data / "train").glob("*.png"))) // 4 * epochs
    command = [sys.executable, str(ROOT / "finetune.py"), "--config", str(CONFIG), "--data_dir", str(data),
               "--ckpt_save_dir", str(out), "--epoch_size", str(epochs), "--min_size", str(size), "--max_size",
               str(size), "--milestones", f"[{max(epochs - 1, 1)}]", "--warmup_iters", str(min(100, steps // 4)),
               "--num_parallel_workers", "2", "--quiet", *extra]
    start = time.perf_counter()
    subprocess.run(command, check=True)
    seconds = time.perf_counter() - start
    summary = json.loads((out / "metrics.json").read_text())
    best = next(row for row in summary["epochs"] if row["epoch"] == summary["best_epoch"])
    return best, seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.detection_transfer", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images_a", type=int, default=120)
    parser.add_argument("--images_b", type=int, default=60)
    parser.add_argument("--epochs_a", type=int, default=16)
    parser.add_argument("--epochs_b", type=int, default=6)
    parser.add_argument("--size", type=int, default=128, help="image side in px")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", help="keep the data and runs here (default: a temporary folder)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as temporary:
        tmp = Path(args.workdir) if args.workdir else Path(temporary)
        shapes_a, shapes_b = tmp / "a", tmp / "b"
        make_shapes(shapes_a, ["circle", "square", "triangle"], args.images_a, 40, args.size, seed=args.seed)
        make_shapes(shapes_b, ["star", "cross"], args.images_b, 40, args.size, seed=args.seed + 1)
        print(f"set A: {args.images_a} images, {args.epochs_a} epochs from scratch", flush=True)
        a_row, a_seconds = finetune(shapes_a, tmp / "run_a", args.epochs_a, args.size, [])
        rows = [("A from scratch", a_row, a_seconds)]
        a_best = tmp / "run_a" / f"{MODEL}_best.pth"
        for label, extra in (("B, load_from the A checkpoint", ["--load_from", str(a_best)]),
                             ("B, load_from A, lr 0.005", ["--load_from", str(a_best), "--lr", "0.005"]),
                             ("B, load_from A, BatchNorm trained", ["--load_from", str(a_best), "--freeze_bn",
                                                                    "false"]),
                             ("B from scratch", [])):
            print(f"{label}: {args.images_b} images, {args.epochs_b} epochs", flush=True)
            row, seconds = finetune(shapes_b, tmp / f"run_{len(rows)}", args.epochs_b, args.size, extra)
            rows.append((label, row, seconds))
    print(f"\n{MODEL}, {args.size} px, configs/shapes_detection.yaml (SGD lr 0.02 unless said, batch 4); best epoch "
          "of each")
    print(f"{'run':<36} {'bbox_mAP':>8} {'bbox_mAP50':>10} {'time_s':>7}")
    for label, row, seconds in rows:
        print(f"{label:<36} {row['bbox_mAP']:>8.1f} {row['bbox_mAP50']:>10.1f} {seconds:>7.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
