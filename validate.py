"""Evaluate a checkpoint written by finetune.py: loss, top-1/top-5, per-class accuracy and pred.txt.

    python validate.py --ckpt_path ckpt/tf_efficientnet_lite0_best.pth --data_dir DIR
    python validate.py --ckpt_path ckpt/tf_efficientnet_lite0_best.safetensors   (its .json sidecar beside it)
"""

import sys

from tunecv.scripts.validate import main

if __name__ == "__main__":
    sys.exit(main())
