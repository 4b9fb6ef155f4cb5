"""Data layouts → (image path, class name) pairs: ImageFolder splits, a single folder of classes, list files
(PaddleClas `train_list.txt`, MMPretrain `ann_file`), CSV files, FGVC-Aircraft's native lists; and detection.

Pure file parsing: no images are opened here, nothing is batched.
"""

from __future__ import annotations

import csv
import logging
import os
import random
from dataclasses import dataclass, replace
from pathlib import Path

from tunecv.config import DataConfig
from tunecv.errors import UserError

logger = logging.getLogger(__name__)

LIST_NAMES = ("train_list.txt", "train.txt", "meta/train.txt")  # PaddleClas, MMPretrain
CSV_NAMES = ("train.csv",)
AIRCRAFT_SPLITS = ("train", "val", "trainval", "test")
AIRCRAFT_LEVEL_FILES = {"variant": "variants.txt", "family": "families.txt", "manufacturer": "manufacturers.txt"}
AIRCRAFT_BANNER_PX = 20  # the copyright banner the dataset authors ask users to crop off
SPLIT_SEED = 0  # fixed: every run and validate.py see the same split of a single folder


@dataclass(frozen=True)
class Labelled:
    """Images of one split with their class names; `classes` is the declared class order, when there is one."""

    pairs: list[tuple[str, str]]
    classes: list[str] | None = None
    crop_bottom: int = 0


def image_files(directory: Path, extensions: tuple[str, ...]) -> list[Path]:
    """Images under `directory`, recursively, sorted; hidden files and folders skipped."""
    found = []
    for dirpath, dirnames, filenames in os.walk(directory):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(Path(dirpath) / name for name in sorted(filenames)
                     if not name.startswith(".") and name.lower().endswith(extensions))
    return found


def class_folders(root: Path, extensions: tuple[str, ...]) -> Labelled:
    """root/<class>/**/<image>: classes are the folder names, sorted."""
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise UserError(f"{root} has no class folders; expected {root}/<class>/<image>")
    pairs: list[tuple[str, str]] = []
    for class_dir in class_dirs:
        files = image_files(class_dir, extensions)
        if not files:
            raise UserError(f"class folder {class_dir} has no images (.jpg, .png, ... any format PIL reads); "
                            "add images or remove the folder")
        pairs.extend((str(path), class_dir.name) for path in files)
    return Labelled(pairs, [p.name for p in class_dirs])


def stratified_split(pairs: list[tuple[str, str]], val_fraction: float, seed: int = SPLIT_SEED,
                     ) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(train, val): per class, a seeded `val_fraction` (at least one image when the class has two) goes to val."""
    by_class: dict[str, list[tuple[str, str]]] = {}
    for pair in pairs:
        by_class.setdefault(pair[1], []).append(pair)
    rng = random.Random(seed)
    train, val = [], []
    for name in sorted(by_class):
        members = sorted(by_class[name])
        rng.shuffle(members)
        count = min(len(members) - 1, max(1, round(len(members) * val_fraction))) if val_fraction > 0 else 0
        val.extend(members[:count])
        train.extend(members[count:])
    return sorted(train), sorted(val)


def read_class_list(path: Path) -> list[str]:
    """PaddleClas label_list.txt: `<index> <name>` per line (names may hold spaces), indices 0..n-1."""
    names: dict[int, str] = {}
    for number, line in _lines(path):
        index, name = (line.split(None, 1) + [""])[:2]
        if not (index.isascii() and index.isdigit()) or not name.strip():
            raise UserError(f"{path}:{number}: expected '<index> <class name>', got {line!r}")
        if int(index) in names:
            raise UserError(f"{path}:{number}: index {index} is given twice")
        names[int(index)] = name.strip()
    if sorted(names) != list(range(len(names))):
        raise UserError(f"{path}: class indices must be 0..{len(names) - 1} without gaps")
    return [names[i] for i in range(len(names))]


def read_list_file(path: Path, image_root: Path, class_names: list[str] | None) -> Labelled:
    """`relative/path label` per line; the label is an integer index or a class name. Split on the last
    whitespace, so paths may hold spaces."""
    rows = []
    for number, line in _lines(path):
        parts = line.rsplit(None, 1)
        if len(parts) != 2:
            raise UserError(f"{path}:{number}: expected '<image path> <label>', got {line!r}")
        rows.append((number, parts[0], parts[1]))
    return _labelled(rows, path, image_root, class_names)


def read_csv_file(path: Path, image_root: Path, class_names: list[str] | None, path_column: str,
                  label_column: str) -> Labelled:
    """A CSV with a header row naming `path_column` and `label_column` (fastai / Kaggle)."""
    with path.open(newline="", encoding="utf-8-sig") as handle:  # utf-8-sig: Excel writes a byte-order mark
        reader = csv.DictReader(handle)
        missing = [c for c in (path_column, label_column) if c not in (reader.fieldnames or [])]
        if missing:
            columns = ", ".join(reader.fieldnames or [])
            raise UserError(f"{path} has no column {', '.join(missing)} (columns: {columns}); "
                            "set path_column/label_column")
        rows = [(reader.line_num, (row[path_column] or "").strip(), (row[label_column] or "").strip())
                for row in reader]
    for number, image, label in rows:
        if not image or not label:
            raise UserError(f"{path}:{number}: empty path or label")
    return _labelled(rows, path, image_root, class_names)


def _is_index(label: str) -> bool:
    return label.isascii() and label.lstrip("-").isdigit()


def _labelled(rows: list[tuple[int, str, str]], source: Path, image_root: Path,
              class_names: list[str] | None) -> Labelled:
    """Labels are class indices or class names, decided per line: a class_list name wins (a class "2007"),
    else digits are an index. Without a class_list the file must use one kind throughout."""
    if not rows:
        raise UserError(f"{source} lists no images")
    names = class_names
    if names is None:
        indices = [_is_index(label) for _, _, label in rows]
        if any(indices) and not all(indices):
            majority = sum(indices) * 2 >= len(indices)
            number, _, label = next(row for row, index in zip(rows, indices) if index != majority)
            kind = "an integer label" if majority else "a class name"
            raise UserError(f"{source}:{number}: label {label!r} is not {kind} like the other lines")
        if all(indices):
            names = [str(i) for i in range(max(int(label) for _, _, label in rows) + 1)]
    pairs, seen = [], {}
    for number, image, label in rows:
        if names is not None and label not in (class_names or ()):
            if not _is_index(label):
                raise UserError(f"{source}:{number}: class {label!r} is not in class_list")
            if not 0 <= int(label) < len(names):
                raise UserError(f"{source}:{number}: label {int(label)} is outside [0, {len(names)}); "
                                "check the label or class_list")
            label = names[int(label)]
        full = str(image_root / image)
        if full in seen:
            raise UserError(f"{source}:{number}: {image} is listed twice (first at line {seen[full]})")
        seen[full] = number
        pairs.append((full, label))
    return Labelled(pairs, names)


def read_aircraft(root: Path, split: str, level: str) -> Labelled:
    """FGVC-Aircraft: data/images/<id>.jpg + data/images_<level>_<split>.txt lines `<id> <class name>`."""
    data = root / "data" if (root / "data" / "images").is_dir() else root
    listing = data / f"images_{level}_{split}.txt"
    if split not in AIRCRAFT_SPLITS:
        raise UserError(f"FGVC-Aircraft has the splits {', '.join(AIRCRAFT_SPLITS)}, not {split!r}; set "
                        "train_split/val_split")
    if not listing.is_file():
        raise UserError(f"{listing} is missing, and annotation_level {level} needs it for the {split} split; check "
                        f"data_dir, or set another annotation_level ({', '.join(AIRCRAFT_LEVEL_FILES)})")
    pairs = []
    for number, line in _lines(listing):
        image_id, _, name = line.partition(" ")
        if not name.strip():
            raise UserError(f"{listing}:{number}: expected '<image id> <class name>', got {line!r}")
        pairs.append((str(data / "images" / f"{image_id}.jpg"), name.strip()))
    class_file = data / AIRCRAFT_LEVEL_FILES[level]
    classes = [line for _, line in _lines(class_file)] if class_file.is_file() else None
    return Labelled(pairs, classes, crop_bottom=AIRCRAFT_BANNER_PX)


def _lines(path: Path) -> list[tuple[int, str]]:
    if not path.is_file():
        raise UserError(f"{path} not found; check the path in the config")
    text = path.read_text(encoding="utf-8-sig")
    return [(n, line.strip()) for n, line in enumerate(text.splitlines(), start=1)
            if line.strip() and not line.lstrip().startswith("#")]


def _has_image(directory: Path, extensions: tuple[str, ...]) -> bool:
    """Stops at the first image instead of listing the folder."""
    for _, dirnames, filenames in os.walk(directory):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        if any(not n.startswith(".") and n.lower().endswith(extensions) for n in filenames):
            return True
    return False


def _find(root: Path, names: tuple[str, ...]) -> Path | None:
    return next((root / name for name in names if (root / name).is_file()), None)


def _val_list_for(train_list: Path) -> Path | None:
    name = train_list.name.replace("train", "val", 1)
    candidate = train_list.with_name(name)
    return candidate if candidate != train_list and candidate.is_file() else None


def detect_layout(cfg: DataConfig, extensions: tuple[str, ...]) -> DataConfig:
    """`dataset: auto` → the one layout found in data_dir (train_list/val_list filled in for list and CSV files).
    Ambiguous or empty folders are errors that list what was found and the key that picks one."""
    if cfg.dataset != "auto" and not (cfg.dataset in ("list", "csv") and not cfg.train_list):
        return cfg
    if cfg.train_list:
        kind = "csv" if cfg.train_list.lower().endswith(".csv") else "list"
        return replace(cfg, dataset=kind)
    root = Path(cfg.data_dir or ".")
    if not root.is_dir():
        raise UserError(f"data_dir {root} does not exist; check --data_dir")
    if cfg.dataset in ("list", "csv"):  # the kind is chosen; find its files as detection would
        found = _find(root, LIST_NAMES if cfg.dataset == "list" else CSV_NAMES)
        if found is None:
            raise UserError(f"no {cfg.dataset} file found in {root}; set train_list (and val_list)")
        val = _val_list_for(found)
        return replace(cfg, train_list=str(found), val_list=cfg.val_list or (str(val) if val else None))
    candidates: dict[str, DataConfig] = {}
    split = root / cfg.train_split
    if split.is_dir() and any(p.is_dir() and not p.name.startswith(".") for p in split.iterdir()):
        candidates["folder"] = replace(cfg, dataset="folder")
    for kind, names in (("list", LIST_NAMES), ("csv", CSV_NAMES)):
        found = _find(root, names)
        if found is not None:
            val = _val_list_for(found)
            candidates[kind] = replace(cfg, dataset=kind, train_list=str(found), val_list=str(val) if val else None)
    if _find(root, ("images_variant_train.txt", "data/images_variant_train.txt")):
        candidates["aircraft"] = replace(cfg, dataset="aircraft")
    if not candidates and any(_has_image(p, extensions) for p in root.iterdir()
                              if p.is_dir() and not p.name.startswith(".")):
        candidates["single_folder"] = replace(cfg, dataset="single_folder")
    if len(candidates) == 1:
        (kind, resolved), = candidates.items()
        logger.info("data layout: %s detected in %s", kind, root)
        return resolved
    if candidates:
        raise UserError(f"{root} matches several layouts ({', '.join(candidates)}); set dataset: to one of them")
    held = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir() if not p.name.startswith("."))
    raise UserError(f"no data layout found in {root} (found: {', '.join(held[:6]) or 'nothing'}); expected "
                    f"{root / cfg.train_split}/<class>/<image>, <class>/<image>, train_list.txt, train.csv or "
                    "FGVC-Aircraft's images_variant_train.txt")
