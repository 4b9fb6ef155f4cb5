"""End to end, as a user runs it: finetune.py then validate.py in subprocesses, checking the files they write."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import CLASSES, TINY_MODEL, VAL_PER_CLASS, write_image_folder

ROOT = Path(__file__).resolve().parents[1]
# one intra-op thread: on a shared 2-core machine more threads only contend (see conftest)
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
HEADER = "epoch lr train_loss val_loss top1 top5 time_s"


def _run(script: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, script, *args], cwd=ROOT, env=ENV, capture_output=True, text=True,
                          timeout=300)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _finetune(data_dir: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return _run("finetune.py", "--data_dir", str(data_dir), "--model", TINY_MODEL, "--pretrained", "false",
                "--image_resize", "32", "--batch_size", "4", "--epoch_size", "2", "--lr", "0.01",
                "--num_parallel_workers", "1", "--device", "cpu", "--seed", "7", "--ckpt_save_dir", str(out),
                *extra)


def _rows(results: Path) -> tuple[list[list[str]], str]:
    lines = results.read_text().splitlines()
    assert lines[0] == HEADER
    return [line.split() for line in lines[1:-1]], lines[-1]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("e2e") / "images")


@pytest.fixture(scope="module")
def run_dir(data_dir: Path, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("run") / "ckpt"
    return out, _finetune(data_dir, out)


def test_finetune_writes_every_output(run_dir, data_dir):
    out, proc = run_dir
    expected = {f"{TINY_MODEL}_best.pth", f"{TINY_MODEL}_last.pth", "results.txt", "config.yaml", "train.log",
                "metrics.json"}
    assert expected <= {p.name for p in out.iterdir()}
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]

    rows, best_line = _rows(out / "results.txt")
    assert [row[0] for row in rows] == ["1", "2"] and all(len(row) == 7 for row in rows)
    for row in rows:
        assert all(float(value) > 0 for value in row[1:4])  # lr, train_loss, val_loss
        assert 0 <= float(row[4]) <= 100 and row[5] == "-"  # no top-k of 3 classes: it would be 100 whatever
    match = re.fullmatch(r"best top1 (\d+\.\d\d) at epoch ([12])", best_line)
    assert match, best_line
    best_top1, best_epoch = float(match.group(1)), int(match.group(2))
    assert best_top1 == max(float(row[4]) for row in rows)
    assert best_epoch == min(int(row[0]) for row in rows if float(row[4]) == best_top1)

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["best_epoch"] == best_epoch and round(metrics["best_top1"], 2) == best_top1
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2]

    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["model"] == TINY_MODEL and config["image_resize"] == 32 and config["lr"] == 0.01
    assert config["num_classes"] == len(CLASSES) and config["data_dir"] == str(data_dir)

    log = (out / "train.log").read_text()
    assert "epoch 1:" in log and "epoch 2:" in log and "tunecv run" in log
    assert f"best top-1 {best_top1:.2f}% at epoch {best_epoch}" in proc.stdout
    assert str(out / f"{TINY_MODEL}_best.pth") in proc.stdout


def test_validate_reproduces_best_top1(run_dir):
    out, _ = run_dir
    best_top1 = _rows(out / "results.txt")[1].split()[2]
    proc = _run("validate.py", "--ckpt_path", str(out / f"{TINY_MODEL}_best.pth"))
    match = re.search(r"(\d+) images: loss \S+  top1 (\d+\.\d\d)  ECE", proc.stdout)  # no top-k of 3 classes
    assert match, proc.stdout
    assert int(match.group(1)) == len(CLASSES) * VAL_PER_CLASS
    assert match.group(2) == best_top1

    lines = (out / "pred.txt").read_text().splitlines()
    assert lines[0] == "path\tpred_label\ttrue_label\tscore"
    assert len(lines) == 1 + len(CLASSES) * VAL_PER_CLASS
    correct = 0
    per_class = {name: [0, 0] for name in CLASSES}
    for line in lines[1:]:
        path, pred, true, score = line.split("\t")
        assert Path(path).is_file() and Path(path).parent.name == true
        assert pred in CLASSES and 0 < float(score) <= 1
        correct += pred == true
        per_class[true][0] += pred == true
        per_class[true][1] += 1
    assert f"{100 * correct / (len(lines) - 1):.2f}" == best_top1
    for name, (hits, count) in per_class.items():  # the per-class table agrees with pred.txt
        assert re.search(rf"^{name}\s+{count}\s+{100 * hits / count:.2f}$", proc.stdout, re.MULTILINE), proc.stdout


def test_validate_refuses_a_checkpoint_of_another_model(run_dir):
    out, _ = run_dir
    proc = _run("validate.py", "--ckpt_path", str(out / f"{TINY_MODEL}_best.pth"), "--model", "resnet18", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert "(model resnet18) does not fit this model" in last and "missing" in last and len(last) < 600


def test_same_seed_same_results(run_dir, data_dir, tmp_path):
    out, _ = run_dir
    again = tmp_path / "again"
    _finetune(data_dir, again)
    first, first_best = _rows(out / "results.txt")
    second, second_best = _rows(again / "results.txt")
    assert [row[:6] for row in first] == [row[:6] for row in second]  # all but time_s
    assert first_best == second_best


def test_without_validation(data_dir, tmp_path):
    out = tmp_path / "noval"
    proc = _finetune(data_dir, out, "--val_while_train", "false", "--epoch_size", "1")
    rows, best_line = _rows(out / "results.txt")
    assert len(rows) == 1 and rows[0][3:6] == ["-", "-", "-"]
    assert best_line == "best top1 - at epoch 1"
    assert (out / f"{TINY_MODEL}_best.pth").is_file()
    assert json.loads((out / "metrics.json").read_text())["best_top1"] is None
    assert "no validation set" in proc.stdout


def test_bad_flag_exit_2_one_line(data_dir, tmp_path):
    proc = _run("finetune.py", "--data_dir", str(data_dir), "--ckpt_save_dir", str(tmp_path), "--batchsize", "4",
                check=False)
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("tunecv: error: unknown config key 'batchsize' (command line); did you mean "
                               "'batch_size'")
    assert proc.stdout == ""
