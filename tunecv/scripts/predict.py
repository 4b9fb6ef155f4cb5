"""Classify image files with a checkpoint written by finetune.py: top-k classes and probabilities per image. With
a detector's checkpoint: the objects found (class, score, box) per image, and each image drawn with them.

    python predict.py --ckpt_path ckpt/run/tf_efficientnet_lite0_best.pth photos/ img.jpg 'more/*.png' --topk 3
    python predict.py --ckpt_path X photos/ --output preds.csv      (or .json)
    python predict.py --ckpt_path ckpt/run/maskrcnn_resnet50_fpn_best.pth street/ --score_threshold 0.5
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from tunecv import cli
from tunecv.config import UserError
from tunecv.inference.predict import check_some_read, collect_images
from tunecv.inference.trained import load_trained
from tunecv.tasks.base import PredictOptions

logger = logging.getLogger("tunecv")


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
        cli.setup_logging(args.quiet, args.verbose, hold=True)
        trained = load_trained(args.ckpt_path, args.config, overrides, args.cfg_options)
        paths = collect_images(args.inputs)
        draw_dir = Path(args.draw_dir) if args.draw_dir else Path(args.ckpt_path).parent / "predictions"
        options = PredictOptions(args.topk, args.tta, args.score_threshold, draw_dir)
        rows, bad = trained.task.predict(trained, paths, options)
        check_some_read(paths, bad)
        if args.output:  # a full disk here is one line too
            trained.task.write_predictions(args.output, rows)
        cli.release_console()  # the checks passed: the lines they held go out
    except (UserError, RuntimeError, OSError, KeyboardInterrupt) as err:  # one line, no traceback
        return cli.handled_exit(err)
    for row in rows:
        print(trained.task.prediction_line(row))
    if bad:
        logger.warning("%d file%s skipped (they do not decode): %s", len(bad), "s" * (len(bad) > 1), ", ".join(bad))
    if args.output:
        logger.info("predictions: %s", args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
