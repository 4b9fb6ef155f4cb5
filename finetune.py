"""Fine-tune an ImageNet-pretrained classifier on your images (or, with task: detection, a COCO-trained detector).

    python finetune.py --config configs/demo.yaml
    python finetune.py --config configs/hymenoptera.yaml --data_dir DIR --num_classes 2 --pretrained
    python finetune.py --config configs/seeds/mmdet_cityscapes_maskrcnn.yaml --data_dir data/cityscapes
"""

import sys

from tunecv.scripts.finetune import main

if __name__ == "__main__":
    sys.exit(main())
