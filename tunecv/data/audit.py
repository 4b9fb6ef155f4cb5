"""Data audit from the start-up scan: train/val leaks, classes of identical images, extreme aspect ratios.

Warnings, not errors: written to data_report.json and summarised in a few log lines.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tunecv.data.datasets import ImageDataset
from tunecv.utils.fileio import atomic_write_text

logger = logging.getLogger(__name__)

MAX_ASPECT = 4.0  # wider or taller than 4:1 loses most of the image to a square crop


@dataclass
class DataReport:
    train_val_duplicates: list[tuple[str, str]] = field(default_factory=list)  # (train path, val path)
    identical_classes: list[str] = field(default_factory=list)  # every image of the class has the same content
    extreme_aspect: list[tuple[str, int, int]] = field(default_factory=list)  # (path, width, height)
    class_counts: dict[str, dict[str, int]] = field(default_factory=dict)  # split → class → images

    def warnings(self) -> list[str]:
        found = []
        if self.train_val_duplicates:
            train, val = self.train_val_duplicates[0]
            found.append(f"{len(self.train_val_duplicates)} validation images are also in train "
                         f"(same content), e.g. {val} = {train}: val accuracy will be optimistic")
        if self.identical_classes:
            found.append(f"classes whose images are all identical: {', '.join(self.identical_classes[:5])}")
        if self.extreme_aspect:
            path, width, height = self.extreme_aspect[0]
            found.append(f"{len(self.extreme_aspect)} images are more than {MAX_ASPECT:g}:1, e.g. {path} "
                         f"({width}x{height}): a square crop keeps little of them")
        return found


def audit(train: ImageDataset, val: ImageDataset | None) -> DataReport:
    report = DataReport()
    splits = {"train": train} if val is None else {"train": train, "val": val}
    for name, dataset in splits.items():
        counts: dict[str, int] = defaultdict(int)
        for label in dataset.targets:
            counts[dataset.classes[label]] += 1
        report.class_counts[name] = dict(counts)
    if val is not None:
        seen = {}
        for path, _ in train.samples:
            seen.setdefault(train.hashes.get(path), path)
        report.train_val_duplicates = [(seen[val.hashes[path]], path) for path, _ in val.samples
                                       if val.hashes.get(path) in seen and val.hashes.get(path)]
    digests: dict[int, set[str]] = defaultdict(set)
    members: dict[int, int] = defaultdict(int)
    for path, label in train.samples:
        digests[label].add(train.hashes.get(path, path))
        members[label] += 1
    report.identical_classes = [train.classes[label] for label, found in sorted(digests.items())
                                if members[label] > 1 and len(found) == 1]
    for dataset in splits.values():
        for path, _ in dataset.samples:
            width, height = dataset.sizes.get(path, (1, 1))
            if max(width, height) > MAX_ASPECT * max(1, min(width, height)):
                report.extreme_aspect.append((path, width, height))
    return report


def write_report(report: DataReport, directory: Path) -> Path:
    """data_report.json in `directory`; each finding logged as one warning line."""
    target = directory / "data_report.json"
    atomic_write_text(target, json.dumps(asdict(report), indent=2) + "\n")
    for line in report.warnings():
        logger.warning("data audit: %s", line)
    return target
