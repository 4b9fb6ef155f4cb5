"""Fine-tune an ImageNet-pretrained classifier on your images (or, with task: detection, a COCO-trained detector).

    python finetune.py --config configs/demo.yaml
    python finetune.py --config configs/hymenoptera.yaml --data_dir DIR --num_classes 2 --pretrained
    python finetune.py --config configs/seeds/mmdet_cityscapes_maskrcnn.yaml --data_dir data/cityscapes

The pipeline, in order: load_config → create_task → resolve → create_dataset → create_transforms → create_loader →
create_model → create_optimizer / create_scheduler (per phase) → fit → `<model>_best` and results.txt.
"""

import sys

from tunecv.scripts.finetune import main

if __name__ == "__main__":
    sys.exit(main())
