"""Export a checkpoint written by finetune.py to ONNX, TorchScript or safetensors, with a JSON sidecar and a
parity check of the exported file against the model.

    python export.py --ckpt_path ckpt/run/tf_efficientnet_lite0_best.pth --format onnx --dynamic_batch
    python export.py --ckpt_path X --format torchscript --images photos/ --output model.pt
"""

import sys

from tunecv.scripts.export import main

if __name__ == "__main__":
    sys.exit(main())
