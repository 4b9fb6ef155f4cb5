"""Run logs: metrics.csv (every metric per epoch), curves.png spaced out for fast epochs, TensorBoard scalars (an
optional dependency with a clear message when missing), --quiet / --verbose, colours on a terminal only."""

from __future__ import annotations

import csv
import io
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TINY_MODEL, write_image_folder
from tunecv import cli
from tunecv.config import load_config
from tunecv.errors import UserError
from tunecv.report.results import ResultsWriter, tensorboard_writer
from tunecv.tasks.classification import Classification
from tunecv.train.engine import EpochProgress

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _epoch(epoch: int, top1: float | None) -> dict:
    """A classification row as the task writes it: 30 images in 0.1 s, validated when `top1` is given."""
    stats = EpochProgress(batches=3, loss_sum=30.0 / epoch, images=30, lr=0.01 / epoch, seconds=0.1)
    scores = None if top1 is None else {"val_loss": 0.5, "top1": top1, "top5": 100.0, "eval_images_per_s": 900.0}
    return Classification().row(epoch, stats, scores, 1.5)


def _scalars(directory: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(directory))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_metrics_csv_and_tensorboard_scalars(tmp_path):
    pytest.importorskip("tensorboard")
    writer = ResultsWriter(tmp_path, tensorboard=True)
    writer.add(_epoch(1, None))
    writer.add(_epoch(2, 75.0))
    writer.finish(75.0, 2)
    with (tmp_path / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [row["epoch"] for row in rows] == ["1", "2"]
    assert rows[0]["top1"] == "" and float(rows[1]["top1"]) == 75.0 and float(rows[1]["lr"]) == 0.005
    scalars = _scalars(tmp_path / "tensorboard")
    assert scalars["accuracy/top1"] == [(2, 75.0)]  # epoch 1 was not validated: no point
    assert [step for step, _ in scalars["loss/train"]] == [1, 2]


def test_replayed_rows_of_a_resumed_run_are_not_sent_again(tmp_path):
    pytest.importorskip("tensorboard")
    writer = ResultsWriter(tmp_path, tensorboard=True)
    writer.add(_epoch(1, 50.0), replayed=True)
    writer.add(_epoch(2, 60.0))
    writer.finish(60.0, 2)
    assert _scalars(tmp_path / "tensorboard")["accuracy/top1"] == [(2, 60.0)]
    assert len((tmp_path / "metrics.csv").read_text().splitlines()) == 3  # the csv keeps both epochs


def test_an_overwritten_run_replaces_the_earlier_runs_scalars(tmp_path):
    pytest.importorskip("tensorboard")
    first = ResultsWriter(tmp_path, tensorboard=True)
    for epoch in (1, 2, 3):
        first.add(_epoch(epoch, 10.0 * epoch))
    first.finish(30.0, 3)
    second = ResultsWriter(tmp_path, tensorboard=True)
    second.add(_epoch(1, 55.0))
    second.finish(55.0, 1)
    assert _scalars(tmp_path / "tensorboard")["accuracy/top1"] == [(1, 55.0)]


def test_csv_off(tmp_path):
    ResultsWriter(tmp_path).add(_epoch(1, 50.0))
    ResultsWriter(tmp_path, csv=False).add(_epoch(1, 50.0))  # a run over it without the csv
    assert not (tmp_path / "metrics.csv").exists() and (tmp_path / "results.txt").exists()


def test_missing_tensorboard_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # what an environment without it raises
    with pytest.raises(UserError, match="pip install -r requirements-tensorboard.txt"):
        tensorboard_writer(tmp_path)
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    with pytest.raises(UserError, match=r"^log_tensorboard: true needs the tensorboard package"):
        load_config(None, {"dataset": "digits", "log_tensorboard": "true"})  # before any data or model work


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_colours_only_on_a_terminal(monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert cli._colour("warning: x", logging.WARNING, _Terminal()) == "\033[33mwarning: x\033[0m"
    assert cli._colour("warning: x", logging.WARNING, io.StringIO()) == "warning: x"
    assert cli._colour("info", logging.INFO, _Terminal()) == "info"
    monkeypatch.setenv("NO_COLOR", "1")
    assert cli._colour("warning: x", logging.WARNING, _Terminal()) == "warning: x"


def _finetune(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    data = write_image_folder(tmp_path / "images", train_per_class=4, val_per_class=2)
    proc = subprocess.run([sys.executable, "finetune.py", "--data_dir", str(data), "--model", TINY_MODEL,
                           "--image_resize", "32", "--batch_size", "4", "--epoch_size", "2", "--num_parallel_workers",
                           "0", "--device", "cpu", "--ckpt_save_dir", str(tmp_path / "ckpt"), *extra],
                          cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def test_quiet_run_keeps_its_log_file_and_writes_the_logs(tmp_path):
    pytest.importorskip("tensorboard")
    proc = _finetune(tmp_path, "--quiet", "--log_tensorboard")
    assert "tunecv run" not in proc.stderr and "epoch 1:" not in proc.stderr  # no info lines, no bars
    assert "warning: " in proc.stderr and "\033[" not in proc.stderr  # warnings stay, uncoloured in a pipe
    assert "best top-1" in proc.stdout  # the result is still reported
    log = (tmp_path / "ckpt" / "train.log").read_text()
    assert "tunecv run" in log and "epoch 2: lr" in log  # the summary and each epoch's final state
    with (tmp_path / "ckpt" / "metrics.csv").open() as f:
        assert [row["epoch"] for row in csv.DictReader(f)] == ["1", "2"]
    assert list((tmp_path / "ckpt" / "tensorboard").glob("events.out.tfevents.*"))


@pytest.mark.parametrize("flags, debug, info, warning, bars", [
    ({}, False, True, True, True), ({"verbose": True}, True, True, True, True),
    ({"quiet": True}, False, False, True, False)])
def test_console_levels(capsys, tmp_path, flags, debug, info, warning, bars):
    from tunecv.utils.progress import _console_quiet

    cli.setup_logging(**flags)
    cli.add_log_file(tmp_path / "train.log")
    logger = logging.getLogger("tunecv.test")
    logger.debug("a debug line")
    logger.info("an info line")
    logger.warning("a warning line")
    err = capsys.readouterr().err
    assert ("debug: a debug line" in err, "an info line" in err, "warning: a warning line" in err) == \
        (debug, info, warning)
    assert _console_quiet() is not bars
    assert "an info line" in (tmp_path / "train.log").read_text()  # the file keeps it whatever the console shows


def test_curves_of_fast_epochs_are_drawn_spaced_out_and_at_the_end(tmp_path):
    """A drawing takes ~0.3 s: epochs of milliseconds (cached features) must not each wait for one, yet the
    finished run's curves.png shows every epoch."""
    curves = tmp_path / "curves.png"
    writer = ResultsWriter(tmp_path)
    writer.add(_epoch(1, 50.0))
    first = curves.read_bytes()  # the first epoch is drawn at once
    writer.add(_epoch(2, 60.0))
    writer.add(_epoch(3, 70.0))
    assert curves.read_bytes() == first and writer.undrawn  # milliseconds later: not drawn again yet
    writer.finish(70.0, 3)
    assert curves.read_bytes() != first and not writer.undrawn
    writer.next_drawing = 0.0  # as when the epochs take longer than the spacing
    writer.add(_epoch(4, 75.0))
    assert not writer.undrawn

