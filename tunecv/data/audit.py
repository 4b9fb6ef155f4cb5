"""Data audit from the start-up scan: train/val leaks, classes of identical images, identical and near-identical
images under different labels, extreme aspect ratios.

Warnings, not errors: written to data_report.json and summarised in a few log lines.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from tunecv.data.datasets import ImageDataset
from tunecv.utils.fileio import atomic_write_text

logger = logging.getLogger(__name__)

MAX_ASPECT = 4.0  # wider or taller than 4:1 loses most of the image to a square crop
NEAR_BITS = 4  # dHashes this many bits apart or fewer: the same picture re-encoded, resized or lightly edited
# The 64 bits cut into 5 bands: two hashes at most 4 bits apart leave at least one band untouched (pigeonhole), so
# only hashes sharing a band value are compared; at 13 bits a band, random hashes rarely share one (~1/8192).
BANDS = ((0, 13), (13, 13), (26, 13), (39, 13), (52, 12))  # (first bit, width)
PLAIN_BITS = 8  # a hash with fewer set (or clear) bits comes from a nearly flat image: too plain to compare


@dataclass
class DataReport:
    train_val_duplicates: list[tuple[str, str]] = field(default_factory=list)  # (train path, val path)
    identical_classes: list[str] = field(default_factory=list)  # every image of the class has the same content
    extreme_aspect: list[tuple[str, int, int]] = field(default_factory=list)  # (path, width, height)
    class_counts: dict[str, dict[str, int]] = field(default_factory=dict)  # split → class → images
    # split → groups of identical files (path, class) under more than one class
    conflicting_labels: dict[str, list[list[tuple[str, str]]]] = field(default_factory=dict)
    # split → (path, class, path, class, differing hash bits) of near-identical images under different classes
    near_duplicate_labels: dict[str, list[tuple[str, str, str, str, int]]] = field(default_factory=dict)

    def warnings(self) -> list[str]:
        found = []
        if self.train_val_duplicates:
            train, val = self.train_val_duplicates[0]
            found.append(f"{len(self.train_val_duplicates)} validation images are also in train "
                         f"(same content), e.g. {val} = {train}: val accuracy will be optimistic")
        if self.identical_classes:
            found.append(f"classes whose images are all identical: {', '.join(self.identical_classes[:5])}")
        found += self._label_warnings()
        if self.extreme_aspect:
            path, width, height = self.extreme_aspect[0]
            found.append(f"{len(self.extreme_aspect)} images are more than {MAX_ASPECT:g}:1, e.g. {path} "
                         f"({width}x{height}): a square crop keeps little of them")
        return found

    def _label_warnings(self) -> list[str]:
        """One line for identical files under different classes, one for near-identical images."""
        found = []
        groups = [group for split_groups in self.conflicting_labels.values() for group in split_groups]
        if groups:
            path, name = groups[0][0]
            other, other_name = next((p, n) for p, n in groups[0] if n != name)
            found.append(f"{sum(len(group) for group in groups)} images appear under two labels (same content), "
                         f"e.g. {path} ({name}) = {other} ({other_name}): fix their labels or remove one")
        pairs = [pair for split_pairs in self.near_duplicate_labels.values() for pair in split_pairs]
        if pairs:
            path, name, other, other_name, _ = pairs[0]
            count = f"{len(pairs)} pair{'s' * (len(pairs) > 1)} of near-identical images"
            found.append(f"{count} {'have' if len(pairs) > 1 else 'has'} different labels (perceptual hashes at "
                         f"most {NEAR_BITS} bits apart), e.g. {path} ({name}) ~ {other} ({other_name}): check their "
                         "labels or remove one")
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
    for name, dataset in splits.items():
        report.conflicting_labels[name] = label_conflicts(dataset)
        report.near_duplicate_labels[name] = near_duplicates(dataset)
    for dataset in splits.values():
        for path, _ in dataset.samples:
            width, height = dataset.sizes.get(path, (1, 1))
            if max(width, height) > MAX_ASPECT * max(1, min(width, height)):
                report.extreme_aspect.append((path, width, height))
    return report


def label_conflicts(dataset: ImageDataset) -> list[list[tuple[str, str]]]:
    """Groups of files with the same content digest that carry more than one class: [(path, class), ...]."""
    groups: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for path, label in dataset.samples:
        if dataset.hashes.get(path):
            groups[dataset.hashes[path]].append((path, dataset.classes[label]))
    return [group for group in groups.values() if len({name for _, name in group}) > 1]


def near_duplicates(dataset: ImageDataset) -> list[tuple[str, str, str, str, int]]:
    """(path, class, path, class, bits apart) of near-identical images of different classes; identical files
    (same digest) are label_conflicts' and left out here."""
    kept = [(path, label) for path, label in dataset.samples if path in dataset.dhashes]
    pairs = near_pairs([dataset.dhashes[path] for path, _ in kept], [label for _, label in kept])
    found = []
    for i, j, bits in pairs:
        (path, label), (other, other_label) = kept[i], kept[j]
        if dataset.hashes.get(path) != dataset.hashes.get(other):
            found.append((path, dataset.classes[label], other, dataset.classes[other_label], bits))
    return found


MAX_PAIRS = 1000  # near-identical pairs kept in data_report.json


def near_pairs(hashes: list[int], labels: list[int], max_bits: int = NEAR_BITS) -> list[tuple[int, int, int]]:
    """(i, j, bits apart), i < j, for every pair (the first MAX_PAIRS) of 64-bit hashes with different labels at
    most `max_bits` apart (complete for max_bits < len(BANDS)); nearly flat images' hashes (see PLAIN_BITS) are
    skipped. Only hashes that share a band are compared: about 5 n^2 / 8192 comparisons for n random hashes, not
    n^2 / 2 (0.3 s for 100k); m hashes sharing one band value still cost m^2 / 2 (vectorised: ~40 M pairs a
    second)."""
    if max_bits >= len(BANDS):
        raise ValueError(f"{len(BANDS)} bands find every pair at most {len(BANDS) - 1} bits apart, not {max_bits}")
    values = np.array(hashes, dtype=np.uint64).reshape(-1)
    classes = np.array(labels, dtype=np.int64).reshape(-1)
    set_bits = popcount(values)
    indices = np.flatnonzero((set_bits >= PLAIN_BITS) & (set_bits <= 64 - PLAIN_BITS))
    found: dict[tuple[int, int], int] = {}
    for first, width in BANDS:
        band = (values[indices] >> np.uint64(first)) & np.uint64((1 << width) - 1)
        order = np.argsort(band, kind="stable")
        ranked, band = indices[order], band[order]
        # each position's run of equal band values ends at run_end; compare it with the next 1, 2, ... in its run
        starts = np.flatnonzero(np.r_[True, band[1:] != band[:-1]])
        run_end = np.repeat(np.r_[starts[1:], len(band)], np.diff(np.r_[starts, len(band)]))
        live, step = np.flatnonzero(run_end - np.arange(len(band)) > 1), 1
        while live.size:
            a, b = ranked[live], ranked[live + step]
            bits = popcount(values[a] ^ values[b])
            hit = (bits <= max_bits) & (classes[a] != classes[b])
            for i, j, apart in zip(a[hit].tolist(), b[hit].tolist(), bits[hit].tolist()):
                found[min(i, j), max(i, j)] = apart
            if len(found) >= MAX_PAIRS:  # frames of one video under two labels: the first ones tell the story
                return sorted((i, j, bits) for (i, j), bits in found.items())[:MAX_PAIRS]
            step += 1
            live = live[run_end[live] - live > step]
    return sorted((i, j, bits) for (i, j), bits in found.items())


def popcount(values: np.ndarray) -> np.ndarray:
    """Set bits of each uint64 (np.bitwise_count needs numpy 2; requirements allow 1.24)."""
    return np.unpackbits(np.ascontiguousarray(values).view(np.uint8)).reshape(-1, 64).sum(axis=1)


def write_report(report: DataReport, directory: Path) -> Path:
    """data_report.json in `directory`; each finding logged as one warning line."""
    target = directory / "data_report.json"
    atomic_write_text(target, json.dumps(asdict(report), indent=2) + "\n")
    for line in report.warnings():
        logger.warning("data audit: %s", line)
    return target
