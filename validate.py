"""Evaluate a checkpoint written by finetune.py: loss, top-1/top-5, calibration (ECE), per-class accuracy and
pred.txt; report.txt, confusion_matrix.png, top_losses.png and reliability.png beside it. A detector's: COCO bbox
(and segm) mAP, per-class AP and detections.json.

    python validate.py --ckpt_path ckpt/tf_efficientnet_lite0_best.pth --data_dir DIR
    python validate.py --ckpt_path ckpt/tf_efficientnet_lite0_best.safetensors   (its .json sidecar beside it)
    python validate.py --ckpt_path X --calibrate     (fit a temperature on this split; predict.py then uses it)
"""

import sys

from tunecv.scripts.validate import main

if __name__ == "__main__":
    sys.exit(main())
