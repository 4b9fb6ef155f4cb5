"""End to end per data layout: finetune.py then validate.py in subprocesses (tiny model, tiny images), and the same
images as ImageFolder, list files and CSV giving identical results."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from PIL import Image

from conftest import CLASSES, TINY_MODEL, write_image_folder
from tunecv.data import layouts
from tunecv.data.datasets import IMAGE_EXTENSIONS
from tunecv.scripts import finetune

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # see conftest: one thread on 2 cores
TRAIN, VAL = 4, 2  # images per class
COMMON = ("--model", TINY_MODEL, "--pretrained", "false", "--image_resize", "32", "--batch_size", "4",
          "--epoch_size", "1", "--lr", "0.01", "--num_parallel_workers", "0", "--device", "cpu", "--seed", "7")
VARIANTS = ("A320", "747-400", "Cessna 172")  # variants.txt order, not sorted


def _run(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, script, *args], cwd=ROOT, env=ENV, capture_output=True, text=True,
                          timeout=120)


def _sorted_samples(images: Path, split: str) -> list[tuple[str, int]]:
    """(path relative to images, class index), sorted by class then path: the order the folder layout reads."""
    return [(f"{split}/{name}/{path.name}", index) for index, name in enumerate(sorted(CLASSES))
            for path in sorted((images / split / name).iterdir())]


@pytest.fixture(scope="module")
def layouts_dir(tmp_path_factory) -> dict[str, tuple[Path, tuple[str, ...]]]:
    """layout → (data_dir, extra flags). folder, list and csv share the very same image files."""
    base = tmp_path_factory.mktemp("layouts")
    images = write_image_folder(base / "images", TRAIN, VAL)
    lists, csvs = base / "lists", base / "csvs"
    lists.mkdir()
    csvs.mkdir()
    (lists / "label_list.txt").write_text("".join(f"{i} {name}\n" for i, name in enumerate(sorted(CLASSES))))
    for split in ("train", "val"):
        samples = _sorted_samples(images, split)
        (lists / f"{split}_list.txt").write_text("".join(f"{path} {index}\n" for path, index in samples))
        (csvs / f"{split}.csv").write_text("file,species\n" + "".join(
            f"{path},{sorted(CLASSES)[index]}\n" for path, index in samples))

    single = write_image_folder(base / "single", 5, 0) / "train"  # <class>/*.png, no split folders

    aircraft = base / "aircraft" / "data"
    (aircraft / "images").mkdir(parents=True)
    (aircraft / "variants.txt").write_text("".join(f"{v}\n" for v in VARIANTS))
    colors = ((220, 20, 20), (20, 160, 20), (20, 20, 200))
    for split, count in (("train", TRAIN), ("val", VAL)):
        lines = []
        for v, variant in enumerate(VARIANTS):
            for i in range(count):
                image_id = f"{v}{i}{split == 'val':d}0000"[:7]
                image = Image.new("RGB", (48 + 4 * i, 56), colors[v])
                image.paste((0, 0, 0), (0, 36, image.width, 56))  # the 20 px copyright banner
                image.save(aircraft / "images" / f"{image_id}.jpg")
                lines.append(f"{image_id} {variant}\n")
        (aircraft / f"images_variant_{split}.txt").write_text("".join(lines))

    return {"folder": (images, ()),
            "list": (lists, ("--image_root", str(images), "--class_list", "label_list.txt")),
            "csv": (csvs, ("--image_root", str(images), "--path_column", "file", "--label_column", "species")),
            "single_folder": (single, ("--val_fraction", "0.2")),
            "aircraft": (aircraft.parent, ())}


def _train_and_validate(data_dir: Path, extra: tuple[str, ...], out: Path) -> dict:
    train = _run("finetune.py", "--data_dir", str(data_dir), *COMMON, *extra, "--ckpt_save_dir", str(out))
    check = _run("validate.py", "--ckpt_path", str(out / f"{TINY_MODEL}_best.pth")) if train.returncode == 0 else None
    return {"out": out, "train": train, "validate": check}


@pytest.fixture(scope="module")
def runs(layouts_dir, tmp_path_factory) -> dict[str, dict]:
    """layout → {out, train, validate}: finetune.py then validate.py per layout, two layouts at a time (2 cores;
    each process is mostly import time)."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {layout: pool.submit(_train_and_validate, data_dir, extra,
                                       tmp_path_factory.mktemp(f"run_{layout}") / "ckpt")
                   for layout, (data_dir, extra) in layouts_dir.items()}
        return {layout: future.result() for layout, future in futures.items()}


def _results(out: Path) -> tuple[list[list[str]], str]:
    lines = (out / "results.txt").read_text().splitlines()
    assert lines[0] == "epoch lr train_loss val_loss top1 top5 time_s"
    return [line.split() for line in lines[1:-1]], lines[-1]


EXPECTED = {  # layout → (classes, val images)
    "folder": (sorted(CLASSES), VAL * len(CLASSES)), "list": (sorted(CLASSES), VAL * len(CLASSES)),
    "csv": (sorted(CLASSES), VAL * len(CLASSES)), "single_folder": (sorted(CLASSES), len(CLASSES)),
    "aircraft": (list(VARIANTS), VAL * len(VARIANTS))}


@pytest.mark.parametrize("layout", list(EXPECTED))
def test_layout_trains_and_validates(runs, layout):
    out, proc, check = runs[layout]["out"], runs[layout]["train"], runs[layout]["validate"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    classes, val_images = EXPECTED[layout]
    assert f"data layout: {layout} detected" in proc.stderr
    rows, best = _results(out)
    assert len(rows) == 1 and len(rows[0]) == 7
    match = re.fullmatch(r"best top1 (\d+\.\d\d) at epoch 1", best)
    assert match, best

    assert check.returncode == 0, check.stderr[-3000:]
    assert f"dataset: {layout} val: {val_images} images, {len(classes)} classes" in check.stderr
    found = re.search(r"(\d+) images: loss \S+  top1 (\d+\.\d\d)  ECE", check.stdout)  # no top-k of 3 classes
    assert found, check.stdout
    assert int(found.group(1)) == val_images
    assert found.group(2) == match.group(1) == rows[0][4]  # validate.py reproduces training's val top-1

    preds = [line.split("\t") for line in (out / "pred.txt").read_text().splitlines()[1:]]
    assert len(preds) == val_images
    assert sorted({true for _, _, true, _ in preds}) == sorted(classes)
    assert all(Path(path).is_file() for path, *_ in preds)
    if layout in ("folder", "list", "csv", "single_folder"):
        assert all(Path(path).parent.name == true for path, _, true, _ in preds)  # labels follow the files


def test_same_images_same_results_in_every_layout(runs):
    """ImageFolder, list files (integer labels + class_list) and CSV (class names, custom columns) over the same
    files in the same order, same seed: the same run, row for row."""
    for layout in ("folder", "list", "csv"):
        assert runs[layout]["train"].returncode == 0, runs[layout]["train"].stderr[-3000:]
    results = {layout: _results(runs[layout]["out"]) for layout in ("folder", "list", "csv")}
    folder_rows, folder_best = results["folder"]
    for layout in ("list", "csv"):
        rows, best = results[layout]
        assert [row[:6] for row in rows] == [row[:6] for row in folder_rows], layout  # all but time_s
        assert best == folder_best, layout
        # validate.py too: the same images, predictions and scores, line for line
        assert (runs[layout]["out"] / "pred.txt").read_text() == (runs["folder"]["out"] / "pred.txt").read_text()


def test_single_folder_validates_the_seeded_split(runs, layouts_dir):
    """validate.py holds out exactly the images training held out: the seeded, stratified split."""
    out = runs["single_folder"]["out"]
    assert runs["single_folder"]["validate"] is not None
    data_dir = layouts_dir["single_folder"][0]
    pairs = layouts.class_folders(data_dir, IMAGE_EXTENSIONS).pairs
    expected = sorted(layouts.stratified_split(pairs, 0.2)[1])
    preds = sorted(tuple(line.split("\t")[::2]) for line in (out / "pred.txt").read_text().splitlines()[1:])
    assert preds == expected and sorted(name for _, name in preds) == sorted(CLASSES)  # one per class of 5


@pytest.mark.parametrize("problem", ["ambiguous", "bad_line"])
def test_layout_errors_exit_2_one_line(tmp_path, capsys, problem):
    """In-process, as test_cli does: the error comes before any training."""
    data_dir = tmp_path / "data"
    if problem == "ambiguous":
        write_image_folder(data_dir, 1, 1, classes=("a", "b"))
        (data_dir / "train.csv").write_text("path,label\ntrain/a/a_00.png,a\n")
        expected = ["several layouts", "folder", "csv", "dataset"]
    else:
        write_image_folder(data_dir / "imgs", 1, 1, classes=("a", "b"))
        (data_dir / "train_list.txt").write_text("imgs/train/a/a_00.png 0\nimgs/train/b/b_00.png\n")
        expected = [f"{data_dir / 'train_list.txt'}:2:", "expected '<image path> <label>'"]
    assert finetune.main(["--data_dir", str(data_dir), *COMMON, "--ckpt_save_dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("tunecv: error: ")
    for text in expected:
        assert text in last, last
    assert not (tmp_path / "o" / "results.txt").exists()
