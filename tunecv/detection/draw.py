"""Detections drawn on their image: a box, the class and score per object, and its mask as a translucent
overlay (Mask R-CNN), in one colour per class."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from tunecv.utils.fileio import atomic_target

# tab10: distinct on photos, one per class (cycled past ten)
COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]
MASK_OPACITY = 0.45


def draw_detections(image: Image.Image, output: dict[str, torch.Tensor], classes: list[str],
                    path: str | os.PathLike) -> Path:
    """Write `image` with the detections of `output` (boxes, labels, scores; boolean masks (N, H, W)) as a PNG
    at `path`."""
    boxes, labels, scores = output["boxes"], output["labels"], output["scores"]
    pixels = np.asarray(image, dtype=np.float32).copy()
    for mask, label in zip(output.get("masks", []), labels.tolist()):
        colour = np.array(COLOURS[(label - 1) % len(COLOURS)], dtype=np.float32)
        region = mask.numpy()
        pixels[region] = (1 - MASK_OPACITY) * pixels[region] + MASK_OPACITY * colour
    drawn = Image.fromarray(pixels.round().astype(np.uint8))
    pen = ImageDraw.Draw(drawn)
    width = max(1, round(min(drawn.size) / 200))
    for box, label, score in zip(boxes.tolist(), labels.tolist(), scores.tolist()):
        colour = COLOURS[(label - 1) % len(COLOURS)]
        pen.rectangle(box, outline=colour, width=width)
        text = f"{classes[label - 1]} {score:.2f}"
        left, top, right, bottom = pen.textbbox((box[0], box[1]), text)
        lift = min(bottom - top + 2, box[1])  # above the box, or inside it at the image's top edge
        pen.rectangle((left, top - lift, right + 2, bottom - lift), fill=colour)
        pen.text((box[0] + 1, box[1] - lift), text, fill=(255, 255, 255))
    with atomic_target(path) as tmp:
        drawn.save(tmp, format="PNG")
    return Path(path)
