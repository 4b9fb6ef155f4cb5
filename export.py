"""Export a checkpoint written by finetune.py to ONNX, TorchScript or safetensors, with a JSON sidecar (classes,
input size, mean/std, temperature) and a parity check: the exported file, loaded back, must give the PyTorch
model's logits on real images (--images, else the checkpoint's validation split) within --tolerance.

    python export.py --ckpt_path ckpt/run/tf_efficientnet_lite0_best.pth --format onnx --dynamic_batch
    python export.py --ckpt_path X --format torchscript --images photos/ --output model.pt
    python export.py --ckpt_path X --format safetensors --overwrite

The export runs on the CPU in fp32 whatever device the model was trained on. Default output:
<checkpoint folder>/export/<checkpoint name>.onnx|.pt|.safetensors, its sidecar <output>.json.
Exit codes: 0 written; 1 the parity check failed (nothing written, an earlier export stays); 2 bad input
(missing checkpoint, existing output without --overwrite, the ONNX extra not installed, ...).
"""

import sys

from tunecv.scripts.export import main

if __name__ == "__main__":
    sys.exit(main())
