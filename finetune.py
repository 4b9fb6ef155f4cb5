"""Fine-tune an ImageNet-pretrained classifier on your images.

    python finetune.py --config configs/demo.yaml
    python finetune.py --config configs/hymenoptera.yaml --data_dir DIR --num_classes 2 --pretrained
"""

import sys

from tunecv.scripts.finetune import main

if __name__ == "__main__":
    sys.exit(main())
