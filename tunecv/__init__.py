"""tunecv: fine-tune ImageNet-pretrained timm classifiers from the command line."""

__version__ = "0.1.0"
