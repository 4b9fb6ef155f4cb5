"""Classify image files with a checkpoint written by finetune.py: top-k classes and probabilities per image. With
a detector's checkpoint: the objects found (class, score, box) per image, and each image drawn with them.

    python predict.py --ckpt_path ckpt/run/tf_efficientnet_lite0_best.pth photos/ img.jpg 'more/*.png' --topk 3
    python predict.py --ckpt_path X photos/ --output preds.csv      (or .json)
    python predict.py --ckpt_path ckpt/run/maskrcnn_resnet50_fpn_best.pth street/ --score_threshold 0.5
"""

import sys

from tunecv.scripts.predict import main

if __name__ == "__main__":
    sys.exit(main())
