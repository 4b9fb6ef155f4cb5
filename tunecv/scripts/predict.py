"""Classify image files with a checkpoint written by finetune.py: top-k classes and probabilities per image. With
a detector's checkpoint: the objects found (class, score, box) per image, and each image drawn with them.

    python predict.py --ckpt_path ckpt/run/tf_efficientnet_lite0_best.pth photos/ img.jpg 'more/*.png' --topk 3
    python predict.py --ckpt_path X photos/ --output preds.csv      (or .json)
    python predict.py --ckpt_path ckpt/run/maskrcnn_resnet50_fpn_best.pth street/ --score_threshold 0.5
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

from tunecv import cli
from tunecv.config import UserError
from tunecv.data import create_loader
from tunecv.data.loader import num_workers
from tunecv.data.prefetch import on_device
from tunecv.detection.inference import predict_and_draw, write_detection_table
from tunecv.inference.predict import Trained, collect_images, files_dataset, load_trained, predict, top_k
from tunecv.report.results import write_table

logger = logging.getLogger("tunecv")


def run(args, trained: Trained, paths: list[Path]) -> tuple[list[dict], list[str]]:
    """(one row per image that decoded: path and top-k, the paths that did not)."""
    cfg, compute = trained.cfg, trained.compute
    uint8 = compute.device.type == "cuda"  # the GPU normalises (DevicePrefetcher)
    dataset = files_dataset(trained, paths, uint8)
    loader = on_device(create_loader(dataset, cfg.loader, is_training=False, pin_memory=uint8), compute, cfg.data,
                       is_training=False)
    if trained.temperature != 1.0:
        logger.info("probabilities calibrated with temperature %.3f (validate.py --calibrate)", trained.temperature)
    start = time.perf_counter()
    probabilities = predict(trained.model, loader, compute, tta=args.tta, temperature=trained.temperature)
    seconds = time.perf_counter() - start
    logger.info("%d images in %.1f s (%.0f img/s, decoding included%s)", len(probabilities), seconds,
                len(probabilities) / max(seconds, 1e-9), ", x2 for --tta" if args.tta else "")
    rows = [{"path": str(path), "top": top_k(probabilities[i], trained.classes, args.topk)}
            for i, path in enumerate(paths) if i in probabilities]
    return rows, [str(path) for i, path in enumerate(paths) if i not in probabilities]


def run_detection(args, trained: Trained, paths: list[Path]) -> tuple[list[dict], list[str]]:
    """(one row per detection above --score_threshold, the paths that did not decode); each decodable image
    drawn with its detections into --draw_dir."""
    draw_dir = Path(args.draw_dir) if args.draw_dir else Path(args.ckpt_path).parent / "predictions"
    start = time.perf_counter()
    rows, decoded = predict_and_draw(trained.model, paths, trained.compute, trained.cfg.loader.batch_size,
                                     num_workers(trained.cfg.loader.num_parallel_workers), args.score_threshold,
                                     trained.classes, draw_dir)
    seconds = time.perf_counter() - start
    logger.info("%d images in %.1f s (%.1f img/s, decoding and drawing included); drawn with their detections "
                "(score >= %g) in %s", len(decoded), seconds, len(decoded) / max(seconds, 1e-9),
                args.score_threshold, draw_dir)
    return rows, [str(path) for i, path in enumerate(paths) if i not in decoded]


@cli.closes_quietly_on_broken_pipe
def main(argv: list[str] | None = None) -> int:
    parser = cli.build_parser("predict.py", "Classify images with a tunecv checkpoint (any config key can be "
                              "overridden, e.g. --batch_size, --device).", exclude=("ckpt_path",))
    parser.add_argument("--ckpt_path", required=True, help="checkpoint written by finetune.py")
    parser.add_argument("inputs", nargs="+", help="image files, folders (searched recursively) or glob patterns")
    parser.add_argument("--topk", type=int, default=1, help="classes per image (default: 1)")
    parser.add_argument("--tta", action="store_true", help="average with the horizontally flipped image")
    parser.add_argument("--output", help="also write the predictions as .csv or .json")
    parser.add_argument("--score_threshold", type=float, default=0.5,
                        help="detectors: the lowest score of a detection listed and drawn (default: 0.5)")
    parser.add_argument("--draw_dir", help="detectors: where the pictures with their detections go (default: "
                             "predictions/ beside the checkpoint)")
    try:
        args, overrides = cli.parse_args(parser, argv, script_flags=("ckpt_path", "inputs", "topk", "tta", "output",
                                                                 "score_threshold", "draw_dir"))
        if args.topk < 1:
            raise UserError("--topk must be at least 1")
        if args.output and not args.output.endswith((".csv", ".json")):
            raise UserError(f"--output {args.output}: give a .csv or .json file")
        if not 0 <= args.score_threshold <= 1:
            raise UserError("--score_threshold is a score between 0 and 1")
        cli.setup_logging(args.quiet, args.verbose)
        trained = load_trained(args.ckpt_path, args.config, overrides, args.cfg_options)
        paths = collect_images(args.inputs)
        if trained.detection and args.tta:
            raise UserError("--tta averages a classifier's probabilities; detectors have no such option here")
        rows, bad = (run_detection if trained.detection else run)(args, trained, paths)
        if args.output:  # a full disk here is one line too
            (write_detection_table if trained.detection else write_table)(args.output, rows)
    except (UserError, RuntimeError, OSError, KeyboardInterrupt) as err:  # one line, no traceback
        code = cli.failure_exit(err)
        if code is None:
            raise
        return code
    for row in rows:
        if "top" in row:
            print("\t".join([row["path"], *(f"{name} {score:.4f}" for name, score in row["top"])]))
        else:
            print("\t".join([row["path"], row["class"], f"{row['score']:.4f}", " ".join(map(str, row["box"]))]))
    if bad:
        logger.warning("%d file%s skipped (they do not decode): %s", len(bad), "s" * (len(bad) > 1), ", ".join(bad))
    if args.output:
        logger.info("predictions: %s", args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
