"""Evaluate a checkpoint written by finetune.py: loss, top-1/top-5, calibration (ECE), per-class accuracy and
pred.txt; report.txt, confusion_matrix.png, top_losses.png and reliability.png beside it. A detector's: COCO bbox
(and segm) mAP, per-class AP and detections.json.

    python validate.py --ckpt_path ckpt/tf_efficientnet_lite0_best.pth --data_dir DIR
    python validate.py --ckpt_path ckpt/tf_efficientnet_lite0_best.safetensors   (its .json sidecar beside it)
    python validate.py --ckpt_path X --calibrate     (fit a temperature on this split; predict.py then uses it)
"""

from __future__ import annotations

import logging
import sys

from tunecv import cli
from tunecv.config import UserError
from tunecv.inference.trained import load_trained

logger = logging.getLogger("tunecv")


@cli.closes_quietly_on_broken_pipe
def main(argv: list[str] | None = None) -> int:
    parser = cli.build_parser("validate.py", "Evaluate a tunecv checkpoint; any config key can be overridden.",
                              exclude=("ckpt_path",))
    parser.add_argument("--ckpt_path", required=True, help="checkpoint written by finetune.py (<model>_best.pth, or "
                             "<model>_best.safetensors with its .json sidecar)")
    parser.add_argument("--split", help="split to evaluate (default: the checkpoint's val_split)")
    parser.add_argument("--output", help="where to write the predictions (default: pred.txt beside the checkpoint; "
                             "a detector's: detections.json, COCO results format)")
    parser.add_argument("--calibrate", action="store_true",
                        help="fit a temperature on this split (temperature scaling) and store it in the checkpoint")
    try:
        args, overrides = cli.parse_args(parser, argv, script_flags=("ckpt_path", "split", "output", "calibrate"))
        cli.setup_logging(args.quiet, args.verbose, hold=True)
        trained = load_trained(args.ckpt_path, args.config, overrides, args.cfg_options)
        lines = trained.task.validate(trained, args.ckpt_path, args.split, args.output, args.calibrate,
                                      overrides.get("val_ann_file"))
        cli.release_console()  # the checks passed: the lines they held go out
    except (UserError, RuntimeError, OSError, KeyboardInterrupt) as err:  # one line, no traceback
        return cli.handled_exit(err)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
