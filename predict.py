"""Classify image files with a checkpoint written by finetune.py: top-k classes and probabilities per image.

    python predict.py --ckpt_path ckpt/run/tf_efficientnet_lite0_best.pth photos/ img.jpg 'more/*.png' --topk 3
    python predict.py --ckpt_path X photos/ --output preds.csv      (or .json)
"""

import sys

from tunecv.scripts.predict import main

if __name__ == "__main__":
    sys.exit(main())
