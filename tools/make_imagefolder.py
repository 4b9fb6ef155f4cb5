"""Convert a list file, a CSV, FGVC-Aircraft or a single folder of classes into an ImageFolder
(TARGET/<split>/<class>/<image>) of hard links, offline; the source is never modified.

    python -m tools.make_imagefolder data/flowers data/flowers_if                      # layout detected
    python -m tools.make_imagefolder data/pets data/pets_if --train_list train.csv --val_list val.csv
    python -m tools.make_imagefolder data/fgvc-aircraft-2013b data/aircraft_if --annotation_level family
    python -m tools.make_imagefolder data/ants_bees data/ants_bees_if --split 0.25 --seed 1 --copy

Hard links fall back to symlinks across file systems; --copy copies. The tree is built beside TARGET and renamed
into place; a manifest (.tunecv_imagefolder.json) makes a rerun with the same source and options a no-op.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import shutil
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path

from tools.tool_cli import ToolParser, check_can_create, replace_folder, run_tool
from tunecv.config import DataConfig
from tunecv.data import layouts
from tunecv.data.datasets import IMAGE_EXTENSIONS, read_split
from tunecv.errors import UserError

MANIFEST = ".tunecv_imagefolder.json"
LAYOUTS = ("auto", "list", "csv", "aircraft", "single_folder")
DATA_KEYS = ("train_list", "val_list", "image_root", "class_list", "path_column", "label_column", "annotation_level",
             "train_split", "val_split")  # DataConfig keys, same names as the flags
OPTIONS = (*DATA_KEYS, "split", "seed", "copy")  # with the source and the file list, what makes a rerun a no-op


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    defaults = DataConfig()
    parser = ToolParser(prog="python -m tools.make_imagefolder", description=__doc__, allow_abbrev=False,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", metavar="SOURCE", help="the data_dir: list/CSV, FGVC-Aircraft or <class>/<image>")
    parser.add_argument("target", metavar="TARGET", help="the ImageFolder to write: <split>/<class>/<image>")
    parser.add_argument("--layout", choices=LAYOUTS, default="auto")
    for key in ("train_list", "val_list", "image_root", "class_list"):
        parser.add_argument(f"--{key}")
    for key in ("path_column", "label_column", "train_split", "val_split"):
        parser.add_argument(f"--{key}", default=getattr(defaults, key))
    parser.add_argument("--annotation_level", choices=tuple(layouts.AIRCRAFT_LEVEL_FILES),
                        default=defaults.annotation_level)
    parser.add_argument("--split", type=float, help=f"single folder: val share (default {defaults.val_fraction})")
    parser.add_argument("--seed", type=int, default=layouts.SPLIT_SEED, help="single folder: split seed")
    parser.add_argument("--copy", action="store_true", help="copy files instead of linking them")
    parser.add_argument("--force", action="store_true", help="replace a non-empty TARGET")
    return parser.parse_args(argv)


def data_config(args: argparse.Namespace) -> DataConfig:
    """The DataConfig training would use for SOURCE, with `auto` resolved by the same detection."""
    cfg = replace(DataConfig(), dataset=args.layout, data_dir=args.source,
                  **{key: getattr(args, key) for key in DATA_KEYS})
    cfg = layouts.detect_layout(cfg, IMAGE_EXTENSIONS)
    if cfg.dataset == "folder":
        raise UserError(f"{args.source} is already an ImageFolder ({cfg.train_split}/<class>/<image>); train on it")
    if args.split is not None and not 0 < args.split < 1:
        raise UserError(f"--split {args.split} is not a fraction between 0 and 1, e.g. --split 0.2")
    if args.split is not None and cfg.dataset != "single_folder":
        raise UserError(f"--split splits a single folder of classes (SOURCE/<class>/<image>), not {cfg.dataset} data")
    return cfg


def read_pairs(cfg: DataConfig, fraction: float | None, seed: int) -> dict[str, list[tuple[str, str]]]:
    """split name → (image path, class name) pairs, read by tunecv's own layout readers."""
    if cfg.dataset == "single_folder":
        everything = layouts.class_folders(Path(cfg.data_dir), IMAGE_EXTENSIONS)
        train, val = layouts.stratified_split(everything.pairs, cfg.val_fraction if fraction is None else fraction,
                                              seed)
        return {cfg.train_split: train, cfg.val_split: val}
    split_data = {split: read_split(cfg, split) for split in (cfg.train_split, cfg.val_split)}
    if any(labelled.crop_bottom for labelled in split_data.values()):
        print(f"note: the folder layout keeps the {layouts.AIRCRAFT_BANNER_PX} px banner that dataset: "
              f"{cfg.dataset} crops off", file=sys.stderr)
    return {split: labelled.pairs for split, labelled in split_data.items()}


def safe_name(name: str) -> str:
    """One path component: '/' → '_', and no leading '.' ('.', '..', hidden names, which the readers skip)."""
    name = name.replace("/", "_")
    return "_" + name[1:] if name.startswith(".") else name or "_"


def file_names(sources: list[str]) -> list[str]:
    """Names in one class folder: the basename, its parent's name prefixed when two sources share it, then numbered."""
    counts = Counter(os.path.basename(source) for source in sources)
    names: list[str] = []
    taken: set[str] = set()
    for source in sources:
        path = Path(source)
        name = base = safe_name(path.name if counts[path.name] == 1 else f"{path.parent.name}_{path.name}")
        number = 1
        while name in taken:
            number += 1
            name = f"{Path(base).stem}-{number}{Path(base).suffix}"
        names.append(name)
        taken.add(name)
    return names


def plan(pairs_by_split: dict[str, list[tuple[str, str]]]) -> list[list[str]]:
    """[path relative to TARGET, absolute source path] per image, sorted; every class gets one distinct folder."""
    folders: dict[str, str] = {}
    for pairs in pairs_by_split.values():
        for _, name in pairs:
            if folders.setdefault(safe_name(name), name) != name:
                raise UserError(f"classes {folders[safe_name(name)]!r} and {name!r} would share the folder "
                                f"{safe_name(name)!r}; rename one")
    planned = []
    for split, pairs in pairs_by_split.items():
        by_class: dict[str, list[str]] = {}
        for source, name in pairs:
            if not os.path.isfile(source):
                raise UserError(f"image {source} not found; check the list file and image_root")
            if not source.lower().endswith(IMAGE_EXTENSIONS):
                raise UserError(f"{source} has no image extension (.jpg, .png, ...), so ImageFolder readers skip it")
            by_class.setdefault(safe_name(name), []).append(os.path.abspath(source))
        for folder, sources in sorted(by_class.items()):
            sources.sort()
            planned += [[f"{split}/{folder}/{name}", source] for name, source in zip(file_names(sources), sources)]
    return planned


def check_outside(source: Path, target: Path, planned: list[list[str]]) -> None:
    """--force deletes TARGET's contents and we write into it: neither may reach the source."""
    inputs = [source] + [Path(src).resolve() for _, src in planned]
    if target.is_relative_to(source) or any(path.is_relative_to(target) for path in inputs):
        raise UserError(f"TARGET {target} overlaps the source {source}; choose a folder outside it")
    if target.exists() and not target.is_dir():
        raise UserError(f"TARGET {target} is a file; choose a folder")


def link(source: str, dest: Path, copy: bool) -> str:
    """Create `dest` from `source`; returns how: hard link, symlink (across file systems) or copy."""
    if copy:
        shutil.copy2(source, dest)
        return "copies"
    try:
        os.link(source, dest)
        return "hard links"
    except OSError as err:
        if err.errno != errno.EXDEV:
            raise
    os.symlink(source, dest)
    return "symlinks"


def write_tree(planned: list[list[str]], tree: Path, copy: bool) -> Counter:
    modes: Counter = Counter()
    for relative, source in planned:
        dest = tree / relative
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            modes[link(source, dest, copy)] += 1
        except OSError as err:
            hint = "" if copy else "; try --copy"
            raise UserError(f"cannot create {relative} from {source} ({err.strerror}){hint}") from None
    return modes


def install(manifest: dict, target: Path, copy: bool) -> Counter:
    """Build the tree beside TARGET, then swap it in (--force was checked): a failure never leaves half a TARGET."""
    def fill(tree: Path) -> Counter:
        modes = write_tree(manifest["files"], tree, copy)
        (tree / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        return modes
    return replace_folder(target, fill)


def _previous(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # none, or not ours: TARGET is just non-empty
        return None


def convert(args: argparse.Namespace) -> str:
    source, target = Path(args.source).resolve(), Path(args.target).resolve()
    if not source.is_dir():
        raise UserError(f"SOURCE {args.source} is not a folder; give the dataset root")
    cfg = data_config(args)
    planned = plan(read_pairs(cfg, args.split, args.seed))
    check_outside(source, target, planned)
    options = {key: getattr(args, key) for key in OPTIONS} | {"layout": cfg.dataset}
    manifest = {"source": str(source), "options": options, "files": planned}
    if target.is_dir() and any(target.iterdir()):
        if _previous(target / MANIFEST) == manifest:
            return f"already converted: {target}"
        if not args.force:
            raise UserError(f"{args.target} is not empty; pass --force to replace it")
    check_can_create(target)
    modes = install(manifest, target, args.copy)
    counts = Counter(relative.split("/", 1)[0] for relative, _ in planned)
    classes = {relative.split("/")[1] for relative, _ in planned}
    split_counts = ", ".join(f"{split} {counts[split]}" for split in (cfg.train_split, cfg.val_split))
    how = ", ".join(f"{count} {mode}" for mode, count in modes.items())
    return f"converted {cfg.dataset} data: {split_counts} images, {len(classes)} classes, {how} → {target}"


def main(argv: list[str] | None = None) -> int:
    def body() -> int:
        print(convert(parse_args(argv)))
        return 0
    return run_tool(body)


if __name__ == "__main__":
    sys.exit(main())
