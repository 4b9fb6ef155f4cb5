"""scikit-learn's handwritten digits, the offline demo data (`dataset: digits`): 1797 8x8 images as uint8 arrays,
split 80/20 stratified with a fixed seed. Must not build the dataset (datasets.py wraps the arrays)."""

from __future__ import annotations

import numpy as np

DIGITS_VAL_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0  # fixed, so every run and validate.py see the same digits split
CLASSES = [str(d) for d in range(10)]


def digits_split(split: str, training: bool) -> tuple[list[tuple[str, int]], np.ndarray]:
    """(sample ids `digits/<split>/<index>` with their labels, the uint8 images) of the train or val part."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.clip(digits.images * (255.0 / 16.0), 0, 255).astype(np.uint8)
    indices = np.arange(len(images))
    train_idx, val_idx = train_test_split(indices, test_size=DIGITS_VAL_FRACTION, random_state=DIGITS_SPLIT_SEED,
                                          stratify=digits.target)
    chosen = np.sort(train_idx if training else val_idx)
    return [(f"digits/{split}/{i:04d}", int(digits.target[i])) for i in chosen], images[chosen]
