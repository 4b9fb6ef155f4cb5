"""tools/make_imagefolder.py: list/CSV/Aircraft/single folder → ImageFolder of links; the source stays untouched."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tools import make_imagefolder
from tools.make_imagefolder import MANIFEST, file_names, main, plan, safe_name
from tunecv.config import DataConfig
from tunecv.data import create_dataset
from tunecv.errors import UserError

REPO = Path(__file__).resolve().parents[1]


def _image(path: Path, shade: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (6, 6), (shade * 40 % 256, 90, 200)).save(path)
    return path


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _snapshot(root: Path) -> dict[str, tuple]:
    """Every path under root with its bytes (files) and mtime: any change to the source shows up here."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None, p.lstat().st_mtime_ns)
            for p in sorted(root.rglob("*"))}


def _tree(target: Path) -> list[str]:
    return sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file() and p.name != MANIFEST)


def _loaded(target: Path, split: str = "train") -> tuple[list[str], int]:
    """What tunecv training sees in the converted folder."""
    dataset = create_dataset(DataConfig(dataset="folder", data_dir=str(target)), split, None)
    return dataset.classes, len(dataset)


@pytest.fixture
def list_source(tmp_path: Path) -> Path:
    """Integer labels + a PaddleClas label_list.txt whose class names hold spaces."""
    source = tmp_path / "src"
    for i in range(3):
        _image(source / "imgs" / f"c{i}.png", i)
        _image(source / "imgs" / f"d{i}.png", i + 3)
    _write(source / "train_list.txt", "imgs/c0.png 0\nimgs/c1.png 0\nimgs/d0.png 1\nimgs/d1.png 1\n")
    _write(source / "val_list.txt", "# val\nimgs/c2.png 0\nimgs/d2.png 1\n")
    _write(source / "label_list.txt", "0 cat\n1 dog house\n")
    return source


def test_list_file_with_integer_labels_and_class_list(list_source: Path, tmp_path: Path, capsys) -> None:
    before = _snapshot(list_source)
    target = tmp_path / "out"
    assert main([str(list_source), str(target), "--class_list", "label_list.txt"]) == 0
    assert _tree(target) == ["train/cat/c0.png", "train/cat/c1.png", "train/dog house/d0.png",
                             "train/dog house/d1.png", "val/cat/c2.png", "val/dog house/d2.png"]
    assert "train 4, val 2 images, 2 classes, 6 hard links" in capsys.readouterr().out
    assert _snapshot(list_source) == before
    assert _loaded(target) == (["cat", "dog house"], 4)
    assert _loaded(target, "val") == (["cat", "dog house"], 2)


def test_list_file_with_class_names_spaces_and_repeated_basenames(tmp_path: Path) -> None:
    source = tmp_path / "src"
    for folder in ("my photos", "more"):
        _image(source / folder / "0 a.png")
        _image(source / folder / "1.png")
    _write(source / "train.txt", "my photos/0 a.png ants\nmore/0 a.png ants\nmy photos/1.png bees\n")
    _write(source / "val.txt", "more/1.png bees\n")
    target = tmp_path / "out"
    assert main([str(source), str(target), "--layout", "list", "--train_list", "train.txt",
                 "--val_list", "val.txt"]) == 0
    assert _tree(target) == ["train/ants/more_0 a.png", "train/ants/my photos_0 a.png", "train/bees/1.png",
                             "val/bees/1.png"]
    assert (target / "train/ants/more_0 a.png").stat().st_ino == (source / "more/0 a.png").stat().st_ino
    assert _loaded(target) == (["ants", "bees"], 3)


def test_csv_with_custom_columns_is_detected(tmp_path: Path) -> None:
    source = tmp_path / "src"
    for i in range(4):
        _image(source / "pics" / f"{i}.png", i)
    _write(source / "train.csv", "file,species,extra\npics/0.png,Abyssinian,x\npics/1.png,Bengal,y\n"
                                 "pics/2.png,Bengal,z\n")
    _write(source / "val.csv", "file,species,extra\npics/3.png,Abyssinian,x\n")
    target = tmp_path / "out"
    assert main([str(source), str(target), "--path_column", "file", "--label_column", "species"]) == 0
    assert _tree(target) == ["train/Abyssinian/0.png", "train/Bengal/1.png", "train/Bengal/2.png",
                             "val/Abyssinian/3.png"]
    assert json.loads((target / MANIFEST).read_text())["options"]["layout"] == "csv"


def test_fgvc_aircraft_layout_with_slash_and_spaces_in_class_names(tmp_path: Path, capsys) -> None:
    source = tmp_path / "fgvc-aircraft-2013b"
    data = source / "data"
    for i in range(6):
        _image(data / "images" / f"100000{i}.jpg", i)
    _write(data / "variants.txt", "Boeing 737-700\nF/A-18\n")
    _write(data / "images_variant_train.txt", "1000000 F/A-18\n1000001 F/A-18\n1000002 Boeing 737-700\n"
                                              "1000003 Boeing 737-700\n")
    _write(data / "images_variant_val.txt", "1000004 F/A-18\n1000005 Boeing 737-700\n")
    before = _snapshot(source)
    target = tmp_path / "aircraft_if"
    assert main([str(source), str(target)]) == 0
    assert _tree(target) == ["train/Boeing 737-700/1000002.jpg", "train/Boeing 737-700/1000003.jpg",
                             "train/F_A-18/1000000.jpg", "train/F_A-18/1000001.jpg",
                             "val/Boeing 737-700/1000005.jpg", "val/F_A-18/1000004.jpg"]
    assert "banner" in capsys.readouterr().err
    assert _snapshot(source) == before
    assert _loaded(target) == (["Boeing 737-700", "F_A-18"], 4)


def test_single_folder_split_is_stratified_and_seeded(tiny_image_folder: Path, tmp_path: Path) -> None:
    source = tiny_image_folder / "train"  # 3 classes x 8 images, no split folders
    runs = {}
    for name, seed in (("a", "1"), ("b", "1"), ("c", "2")):
        assert main([str(source), str(tmp_path / name), "--split", "0.25", "--seed", seed]) == 0
        runs[name] = _tree(tmp_path / name)
    val = [path for path in runs["a"] if path.startswith("val/")]
    assert len(val) == 6 and {path.split("/")[1] for path in val} == {"circle", "square", "stripes"}
    assert len(runs["a"]) == 24
    assert runs["a"] == runs["b"] and runs["a"] != runs["c"]
    assert _loaded(tmp_path / "a") == (["circle", "square", "stripes"], 18)


def test_links_by_default_copies_with_copy(tiny_image_folder: Path, tmp_path: Path) -> None:
    source = tiny_image_folder / "val"
    before = _snapshot(source)
    assert main([str(source), str(tmp_path / "linked")]) == 0
    assert main([str(source), str(tmp_path / "copied"), "--copy"]) == 0
    original = source / "circle" / "circle_00.png"
    linked, copied = (next((tmp_path / name).rglob("circle_00.png")) for name in ("linked", "copied"))
    assert linked.stat().st_ino == original.stat().st_ino
    assert copied.stat().st_ino != original.stat().st_ino and copied.read_bytes() == original.read_bytes()
    assert _snapshot(source) == before


def test_symlinks_across_file_systems(tiny_image_folder: Path, tmp_path: Path, monkeypatch) -> None:
    def cross_device(source: str, dest: Path) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(make_imagefolder.os, "link", cross_device)
    assert main([str(tiny_image_folder / "val"), str(tmp_path / "out")]) == 0
    linked = next((tmp_path / "out").rglob("circle_00.png"))
    assert linked.is_symlink() and os.readlink(linked) == str(tiny_image_folder / "val/circle/circle_00.png")


def test_second_run_changes_nothing(list_source: Path, tmp_path: Path, capsys) -> None:
    target = tmp_path / "out"
    args = [str(list_source), str(target), "--class_list", "label_list.txt"]
    assert main(args) == 0
    first = {str(p): (p.lstat().st_ino, p.lstat().st_mtime_ns) for p in [target, *target.rglob("*")]}
    capsys.readouterr()
    assert main(args) == 0
    assert capsys.readouterr().out.startswith("already converted")
    assert {str(p): (p.lstat().st_ino, p.lstat().st_mtime_ns) for p in [target, *target.rglob("*")]} == first


def test_non_empty_target_is_refused_unless_force(list_source: Path, tmp_path: Path, capsys) -> None:
    target = _write(tmp_path / "out" / "notes.txt", "mine").parent
    args = [str(list_source), str(target), "--class_list", "label_list.txt"]
    assert main(args) == 2
    assert capsys.readouterr().err == f"tunecv: error: {target} is not empty; pass --force to replace it\n"
    assert (target / "notes.txt").exists() and not (target / "train").exists()
    before = _snapshot(list_source)
    assert main([*args, "--force"]) == 0
    assert not (target / "notes.txt").exists() and len(_tree(target)) == 6
    assert main([*args, "--copy"]) == 2  # converted, but with other options
    assert _snapshot(list_source) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src"]  # no temp folders left


def test_bad_list_line_names_file_and_line(list_source: Path, tmp_path: Path, capsys) -> None:
    _write(list_source / "train_list.txt", "imgs/c0.png 0\nimgs/c1.png\n")
    assert main([str(list_source), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tunecv: error: ") and "train_list.txt:2:" in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_failure_midway_leaves_no_target(tiny_image_folder: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    calls = []

    def failing_link(source: str, dest: Path) -> None:
        calls.append(source)
        if len(calls) == 3:
            raise OSError(errno.EPERM, "Operation not permitted")
        os.symlink(source, dest)

    monkeypatch.setattr(make_imagefolder.os, "link", failing_link)
    assert main([str(tiny_image_folder / "val"), str(tmp_path / "out")]) == 2
    assert "try --copy" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images"]


@pytest.mark.parametrize("target", ["inside", "."])
def test_target_overlapping_the_source_is_refused(tiny_image_folder: Path, target: str) -> None:
    source = tiny_image_folder / "val"
    before = _snapshot(source)
    assert main([str(source), str(source / target), "--force"]) == 2
    assert _snapshot(source) == before


def test_refusals(tiny_image_folder: Path, list_source: Path, tmp_path: Path, capsys) -> None:
    assert main([str(tiny_image_folder), str(tmp_path / "a")]) == 2  # already train/<class>/<image>
    assert main([str(list_source), str(tmp_path / "b"), "--split", "0.2"]) == 2
    assert main([str(tmp_path / "missing"), str(tmp_path / "c")]) == 2
    assert main([str(tiny_image_folder / "val"), str(tmp_path / "d"), "--split", "1.5"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 4 and all(line.startswith("tunecv: error: ") for line in err)
    assert "already an ImageFolder" in err[0] and "single folder" in err[1] and "missing" in err[2]
    assert "between 0 and 1" in err[3]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images", "src"]  # nothing written


def test_names_are_folder_safe_and_distinct() -> None:
    assert [safe_name(n) for n in ("F/A-18", ".", "..", "", ".hidden", "Boeing 737")] == \
        ["F_A-18", "_", "_.", "_", "_hidden", "Boeing 737"]
    assert file_names(["/d/x/0.png", "/d/y/0.png", "/d/z.png", "/e/x/0.png"]) == \
        ["x_0.png", "y_0.png", "z.png", "x_0-2.png"]
    with pytest.raises(UserError, match="share the folder"):
        plan({"train": [("/d/0.png", "F/A-18"), ("/d/1.png", "F_A-18")]})


def test_command_line(tiny_image_folder: Path, tmp_path: Path) -> None:
    target = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "tools.make_imagefolder", str(tiny_image_folder / "train"),
                           str(target), "--split", "0.25"], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"converted single_folder data: train 18, val 6 images, 3 classes, 24 hard links → {target}\n"
    assert len(_tree(target)) == 24


@pytest.mark.parametrize("extra, needle", [(["--bogus"], "unrecognized arguments: --bogus"),
                                           (["--split", "abc"], "argument --split: invalid float value: 'abc'"),
                                           (["--seed", "1.5"], "argument --seed: invalid int value")])
def test_bad_flags_are_one_line(tiny_image_folder: Path, tmp_path: Path, capsys, extra: list[str],
                                needle: str) -> None:
    assert main([str(tiny_image_folder / "train"), str(tmp_path / "out"), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tunecv: error: ") and needle in err and err.count("\n") == 1 and "usage:" not in err
    assert not (tmp_path / "out").exists()


def test_unwritable_target_is_one_line_before_writing(tiny_image_folder: Path, tmp_path: Path) -> None:
    blocker = _write(tmp_path / "a_file", "x")
    done = subprocess.run([sys.executable, "-m", "tools.make_imagefolder", str(tiny_image_folder / "train"),
                           str(blocker / "out"), "--split", "0.25", "--bogus_flag_after"], cwd=REPO,
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 2 and "Traceback" not in done.stderr and done.stderr.count("\n") == 1
    assert "unrecognized arguments: --bogus_flag_after" in done.stderr
    done = subprocess.run([sys.executable, "-m", "tools.make_imagefolder", str(tiny_image_folder / "train"),
                           str(blocker / "out"), "--split", "0.25"], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr == (f"tunecv: error: cannot create TARGET {blocker / 'out'}: {blocker} is a file, not a "
                           "folder; choose another TARGET\n")
    assert blocker.read_text() == "x" and sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "images"]
