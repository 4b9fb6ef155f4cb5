"""Data stage: datasets, transforms and loaders."""

from tunecv.data.datasets import create_dataset
from tunecv.data.loader import create_loader, create_mixup
from tunecv.data.transforms import create_transforms, draft_size

__all__ = ["create_dataset", "create_loader", "create_mixup", "create_transforms", "draft_size"]
