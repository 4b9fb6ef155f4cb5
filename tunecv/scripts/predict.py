"""Classify image files with a checkpoint written by finetune.py: top-k classes and probabilities per image.

    python predict.py --ckpt_path ckpt/run/tf_efficientnet_lite0_best.pth photos/ img.jpg 'more/*.png' --topk 3
    python predict.py --ckpt_path X photos/ --output preds.csv      (or .json)
"""

from __future__ import annotations

import logging
import sys
import time

from tunecv import cli
from tunecv.config import UserError
from tunecv.data import create_loader
from tunecv.data.prefetch import on_device
from tunecv.inference import collect_images, files_dataset, load_trained, predict, top_k
from tunecv.report import write_table

logger = logging.getLogger("tunecv")


def run(args, overrides: dict) -> tuple[list[dict], list[str]]:
    """(one row per image that decoded: path and top-k, the paths that did not)."""
    trained = load_trained(args.ckpt_path, args.config, overrides, args.cfg_options)
    cfg, compute = trained.cfg, trained.compute
    paths = collect_images(args.inputs)
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


@cli.closes_quietly_on_broken_pipe
def main(argv: list[str] | None = None) -> int:
    parser = cli.build_parser("predict.py", "Classify images with a tunecv checkpoint (any config key can be "
                              "overridden, e.g. --batch_size, --device).", exclude=("ckpt_path",))
    parser.add_argument("--ckpt_path", required=True, help="checkpoint written by finetune.py")
    parser.add_argument("inputs", nargs="+", help="image files, folders (searched recursively) or glob patterns")
    parser.add_argument("--topk", type=int, default=1, help="classes per image (default: 1)")
    parser.add_argument("--tta", action="store_true", help="average with the horizontally flipped image")
    parser.add_argument("--output", help="also write the predictions as .csv or .json")
    try:
        args, overrides = cli.parse_args(parser, argv, script_flags=("ckpt_path", "inputs", "topk", "tta", "output"))
        if args.topk < 1:
            raise UserError("--topk must be at least 1")
        if args.output and not args.output.endswith((".csv", ".json")):
            raise UserError(f"--output {args.output}: give a .csv or .json file")
        cli.setup_logging(args.quiet, args.verbose)
        rows, bad = run(args, overrides)
        if args.output:  # a full disk here is one line too
            write_table(args.output, rows)
    except (UserError, RuntimeError, OSError, KeyboardInterrupt) as err:  # one line, no traceback
        code = cli.failure_exit(err)
        if code is None:
            raise
        return code
    for row in rows:
        print("\t".join([row["path"], *(f"{name} {score:.4f}" for name, score in row["top"])]))
    if bad:
        logger.warning("%d file%s skipped (they do not decode): %s", len(bad), "s" * (len(bad) > 1), ", ".join(bad))
    if args.output:
        logger.info("predictions: %s", args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
