"""Detection and instance segmentation (torchvision's R-CNN family) on COCO-format data."""
