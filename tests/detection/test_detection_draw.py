"""predict.py's pictures: the box outline, the label and the translucent mask in the class's colour, the image
elsewhere untouched."""

from __future__ import annotations

import torch
from PIL import Image

from tunecv.detection.draw import COLOURS, MASK_OPACITY, draw_detections


def test_box_label_and_mask_are_drawn_in_the_class_colour(tmp_path):
    image = Image.new("RGB", (64, 64), (255, 255, 255))
    mask = torch.zeros(1, 64, 64, dtype=torch.bool)
    mask[0, 30:40, 30:40] = True
    output = {"boxes": torch.tensor([[20.0, 20.0, 50.0, 50.0]]), "labels": torch.tensor([2]),
              "scores": torch.tensor([0.9]), "masks": mask}
    drawn = Image.open(draw_detections(image, output, ["circle", "square"], tmp_path / "d.png")).convert("RGB")
    colour = COLOURS[1]  # label 2: the second class
    assert drawn.getpixel((50, 35)) == colour  # the box's right edge
    tinted = tuple(round((1 - MASK_OPACITY) * 255 + MASK_OPACITY * c) for c in colour)
    assert drawn.getpixel((35, 35)) == tinted  # inside the mask
    assert drawn.getpixel((25, 45)) == (255, 255, 255)  # inside the box, outside the mask
    assert drawn.getpixel((5, 60)) == (255, 255, 255)
    label_strip = [drawn.getpixel((x, 15)) for x in range(20, 40)]  # the label sits on the box's top edge
    assert colour in label_strip and any(min(pixel) > 230 for pixel in label_strip)  # a plate, light text
