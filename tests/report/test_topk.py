"""One owner (`reported_topk`) decides the top-k reported besides top-1: top-5 past 5 classes, never a top-k of k or
more classes (always 100 %). results.txt (`-`, its columns unchanged), metrics.json/csv, TensorBoard, validate.py's
line and its report.txt follow it; older results and rows with a top5 stay readable."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from conftest import TINY_MODEL, resolved, write_image_folder
from tunecv.config import load_config
from tunecv.errors import UserError
from tunecv.models.factory import create_model
from tunecv.report.plots import read_results
from tunecv.report.results import ResultsWriter, epoch_line, reported_topk
from tunecv.scripts import validate
from tunecv.train.checkpoint import CheckpointSaver


@pytest.mark.parametrize("classes, k", [(2, None), (3, None), (5, None), (6, 5), (1000, 5)])
def test_top5_only_past_5_classes(classes, k):
    assert reported_topk(classes) == k


def _row(epoch: int, top5: float | None = 100.0) -> dict:
    return {"epoch": epoch, "lr": 0.01, "train_loss": 1.0, "val_loss": 0.9, "top1": 50.0 + epoch, "top5": top5,
            "time_s": 1.0, "train_images_per_s": 100.0, "eval_images_per_s": 200.0, "ema_top1": None}


def test_results_without_topk_show_no_top5_value_anywhere(tmp_path):
    pytest.importorskip("tensorboard")
    writer = ResultsWriter(tmp_path, topk=reported_topk(2), tensorboard=True)
    writer.add(_row(1), replayed=True)  # a resumed run's older row, measured with top5: it loses it
    writer.add(_row(2))
    writer.finish(52.0, 2)
    lines = (tmp_path / "results.txt").read_text().splitlines()
    # the columns stay where scripts reading them expect them; `-`: not measured
    assert lines[0] == "epoch lr train_loss val_loss top1 top5 time_s"
    assert lines[1].split() == ["1", "0.01", "1.0000", "0.9000", "51.00", "-", "1.0"]
    assert lines[-1] == "best top1 52.00 at epoch 2"
    assert all(epoch["top5"] is None for epoch in json.loads((tmp_path / "metrics.json").read_text())["epochs"])
    with (tmp_path / "metrics.csv").open() as f:
        assert {row["top5"] for row in csv.DictReader(f)} == {""}
    assert read_results(tmp_path / "results.txt")["top5"] == [None, None]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert "accuracy/top1" in events.Tags()["scalars"] and "accuracy/top5" not in events.Tags()["scalars"]


def test_results_with_top5_and_older_results_files_read(tmp_path):
    writer = ResultsWriter(tmp_path, topk=reported_topk(10), ema=True)
    writer.add(_row(1, top5=80.0))
    assert (tmp_path / "results.txt").read_text().splitlines()[0] == \
        "epoch lr train_loss val_loss top1 top5 time_s ema_top1"
    assert read_results(tmp_path / "results.txt")["top5"] == [80.0]
    older = tmp_path / "older.txt"  # a results.txt of an earlier version: a top5 column of 100s with 3 classes
    older.write_text("epoch lr train_loss val_loss top1 top5 time_s\n1 0.01 1.0 0.9 40.00 100.00 1.0\n"
                     "best top1 40.00 at epoch 1\n")
    assert read_results(older)["top1"] == [40.0]


def test_epoch_line_shows_top5_only_when_measured():
    assert "top5" not in epoch_line(_row(1, top5=None)) and "top1 51.00" in epoch_line(_row(1, top5=None))
    assert "top5 80.00" in epoch_line(_row(1, top5=80.0))


def test_best_metric_top5_is_refused_in_one_sentence():
    with pytest.raises(UserError) as caught:
        load_config(None, {"dataset": "digits", "best_metric": "top5"})
    assert "best_metric" in str(caught.value) and "top1" in str(caught.value) and "\n" not in str(caught.value)


def _checkpoint(root: Path, classes: tuple[str, ...]) -> Path:
    """A <model>_best.pth as finetune.py writes it (random weights: only the reported columns matter here)."""
    data = write_image_folder(root / "images", train_per_class=1, val_per_class=1, classes=classes)
    cfg = resolved(load_config(None, {"data_dir": str(data), "model": TINY_MODEL, "image_resize": 32,
                                      "num_parallel_workers": 0, "device": "cpu",
                                      "ckpt_save_dir": str(root / "ckpt")})).cfg
    torch.manual_seed(0)
    saver = CheckpointSaver(root / "ckpt", TINY_MODEL, cfg.to_flat(), list(classes))
    saver.save(create_model(cfg.model, num_classes=len(classes)), epoch=1, metrics={}, is_best=True)
    return saver.best_path


@pytest.mark.parametrize("classes, shown", [(("circle", "square", "stripes"), None),
                                            (tuple("abcdefg"), "top5")])
def test_validate_line_and_report_follow_the_owner(tmp_path, capsys, classes, shown):
    best = _checkpoint(tmp_path, classes)
    assert validate.main(["--ckpt_path", str(best), "--num_parallel_workers", "0"]) == 0
    line = capsys.readouterr().out.splitlines()[0]
    report = (best.parent / "report.txt").read_text().splitlines()[0]
    if shown is None:
        assert " top1 " in line and " top3 " not in line and " top5 " not in line, line
        assert report.startswith(f"{len(classes)} images, top-1 ") and "top-3" not in report, report
    else:
        assert " top5 " in line, line
        assert ", top-5 " in report, report
