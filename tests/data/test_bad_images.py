"""A truncated image is decided once, at the start-up scan: left out of its split (and of the split sizes),
listed once in bad_images.txt, never warned about again; the scan cache is written by the run, only once it
starts, and read back by the next run."""

from __future__ import annotations

import json
import logging

from conftest import CLASSES, TINY_MODEL, TRAIN_PER_CLASS, VAL_PER_CLASS
from tests.data.test_scan import truncated_jpeg
from tunecv.config import DataConfig
from tunecv.data.bad_images import write_bad_images
from tunecv.data.datasets import create_dataset
from tunecv.data.scan import forget_scans, scan_images
from tunecv.scripts import finetune


def _args(data, out, *extra: str) -> list[str]:
    return ["--data_dir", str(data), "--model", TINY_MODEL, "--image_resize", "32", "--batch_size", "4",
            "--epoch_size", "2", "--num_parallel_workers", "0", "--device", "cpu", "--ckpt_save_dir", str(out),
            *extra]


def test_truncated_jpeg_left_out_of_the_split_and_listed_once(tiny_image_folder, tmp_path):
    bad = tiny_image_folder / "val" / "circle" / "half.jpg"
    truncated_jpeg(bad)
    val = create_dataset(DataConfig(dataset="folder", data_dir=str(tiny_image_folder)), "val", None)
    assert len(val) == len(CLASSES) * VAL_PER_CLASS and str(bad) not in {path for path, _ in val.samples}
    assert [path for path, _ in val.bad_images] == [str(bad)] and "truncated" in val.bad_images[0][1]
    listed = write_bad_images(tmp_path, [val]).read_text().splitlines()
    assert len(listed) == 1 and listed[0].startswith(f"{bad}\t")


def test_image_that_breaks_after_the_scan_is_warned_about_and_listed_once(tiny_image_folder, tmp_path, caplog):
    val = create_dataset(DataConfig(dataset="folder", data_dir=str(tiny_image_folder)), "val", None)
    index = 0
    path = val.samples[index][0]
    truncated_jpeg(tiny_image_folder / "cut.jpg")
    (tiny_image_folder / "cut.jpg").replace(path)  # the file changes under the run
    write_bad_images(tmp_path, [val])  # the run folder opens: the scan found nothing to list
    with caplog.at_level(logging.WARNING):
        assert val[index] is None and val[index] is None
    warned = [r.getMessage() for r in caplog.records if path in r.getMessage()]
    assert len(warned) == 1 and "changed since the start-up scan" in warned[0]
    val.failed_since_scan.clear()  # another loader worker, which fails on it too
    assert val[index] is None
    listed = (tmp_path / "bad_images.txt").read_text().splitlines()
    assert len(listed) == 1 and listed[0].startswith(f"{path}\t")


def test_run_lists_truncated_jpeg_once_and_counts_only_kept_images(tiny_image_folder, tmp_path, capsys):
    bad = tiny_image_folder / "val" / "circle" / "half.jpg"
    truncated_jpeg(bad)
    out = tmp_path / "ckpt"
    assert finetune.main(_args(tiny_image_folder, out)) == 0
    err = capsys.readouterr().err
    assert err.count(str(bad)) == 1  # the scan's warning; no epoch warns about it again
    assert (out / "bad_images.txt").read_text().splitlines() == [f"{bad}\t{_reason(err, bad)}"]
    kept = len(CLASSES) * VAL_PER_CLASS
    assert f"val {kept}" in (out / "train.log").read_text()
    report = json.loads((out / "data_report.json").read_text())
    assert sum(report["class_counts"]["val"].values()) == kept
    cached = json.loads((out / "scan_cache.json").read_text())["files"]
    assert cached[str(bad)][2] is None  # the bad file's verdict is cached too
    listed = sorted(str(p) for p in tiny_image_folder.rglob("*.*"))
    forget_scans()  # the file, not this process's memory
    assert scan_images(listed, out / "scan_cache.json").from_cache == len(listed)  # the next run reuses it


def test_run_that_fails_at_start_writes_no_scan_cache(tiny_image_folder, tmp_path, capsys):
    truncated_jpeg(tiny_image_folder / "train" / "square" / "half.jpg")
    out = tmp_path / "ckpt"
    assert finetune.main(_args(tiny_image_folder, out, "--on_bad_image", "error")) == 2
    assert "half.jpg" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())


def _reason(err: str, bad) -> str:
    """The reason the scan's warning gave: `skipping unreadable image PATH (REASON)`."""
    line = next(line for line in err.splitlines() if str(bad) in line)
    return line.split(f"{bad} (", 1)[1].rsplit(")", 1)[0]


def test_resumed_run_reuses_the_scan_cache(tiny_image_folder, tmp_path, capsys):
    out = tmp_path / "ckpt"
    assert finetune.main(_args(tiny_image_folder, out, "--epoch_size", "1")) == 0
    assert (out / "scan_cache.json").is_file()
    capsys.readouterr()
    forget_scans()  # the file, not this process's memory
    assert finetune.main(_args(tiny_image_folder, out, "--resume", "auto", "-v")) == 0
    err = capsys.readouterr().err
    train, val = len(CLASSES) * TRAIN_PER_CLASS, len(CLASSES) * VAL_PER_CLASS
    assert f"scan: {train} files" in err and f"({train} from cache)" in err and f"({val} from cache)" in err
