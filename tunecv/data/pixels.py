"""Pixel conversions a file's image needs before convert("RGB"/"L") is right: high bit depths and transparency.
Pure functions of a PIL image; no file access."""

from __future__ import annotations

import numpy as np
from PIL import Image


def to_8bit(image: Image.Image) -> Image.Image:
    """16/32-bit integer and float images: convert("RGB") would clip at 255 (all white); scale the range."""
    pixels = np.asarray(image, dtype=np.float64)
    peak = pixels.max(initial=0.0)
    top = 65535.0 if image.mode.startswith("I;16") or peak > 255 else 1.0 if image.mode == "F" and peak <= 1 else 255.0
    return Image.fromarray(np.clip(pixels * (255.0 / top), 0, 255).astype(np.uint8), "L")


def on_white(image: Image.Image) -> Image.Image:
    """Composite transparency on white: transparent pixels often hold black, which is not the photo."""
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba)
