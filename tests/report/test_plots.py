"""Pictures and reports: curves.png after each epoch, validate.py's report.txt (agreeing with pred.txt),
confusion_matrix.png, top_losses.png and reliability.png, finetune.py --show_batch's batch.png; each a valid PNG
of a readable size."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import TINY_MODEL, write_image_folder
from tunecv.report.calibration import reliability_bins
from tunecv.report.plots import plot_batch, plot_confusion, plot_curves, plot_reliability, plot_top_losses, read_results

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _png_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.verify()
        return image.size


def test_curves_from_results_txt(tmp_path):
    results = tmp_path / "results.txt"
    results.write_text("epoch lr train_loss val_loss top1 top5 time_s\n1 0.01 1.2 - - - 0.1\n"
                       "2 0.005 0.9 0.8 70.00 100.00 0.1\nbest top1 70.00 at epoch 2\n")
    assert read_results(results)["val_loss"] == [None, 0.8]
    width, height = _png_size(plot_curves(results, tmp_path / "curves.png"))
    assert width >= 900 and height >= 300


@pytest.mark.parametrize("count", [3, 40])
def test_confusion_matrix_for_few_and_many_classes(tmp_path, count):
    matrix = np.diag(np.arange(1, count + 1))
    matrix[0, -1] = 3
    width, height = _png_size(plot_confusion(matrix, [f"class {i}" for i in range(count)], tmp_path / "c.png"))
    assert width == height >= 400


def test_top_losses_grid(tmp_path):
    images = [Image.new("RGB", (40, 30), color) for color in ("red", "green", "blue", "white", "black")]
    width, height = _png_size(plot_top_losses(images, ["a / b 0.90"] * 5, tmp_path / "t.png"))
    assert width >= 900 and height >= 500  # 4 columns, 2 rows


def test_curves_without_validation(tmp_path):
    results = tmp_path / "results.txt"
    results.write_text("epoch lr train_loss val_loss top1 top5 time_s\n1 0.01 1.2 - - - 0.1\n")
    _png_size(plot_curves(results, tmp_path / "curves.png"))


def test_reliability_panels(tmp_path):
    confident = reliability_bins([0.95] * 10 + [0.55] * 10, [True] * 7 + [False] * 3 + [True] * 5 + [False] * 5)
    width, height = _png_size(plot_reliability({"before": confident, "after": confident}, tmp_path / "r.png"))
    assert width >= 2 * 400 and height >= 400


def test_batch_grid_denormalises(tmp_path):
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    colour = torch.tensor([0.2, 0.5, 0.8])
    batch = ((colour - mean) / std).view(1, 3, 1, 1).expand(3, 3, 24, 24)  # normalised images of one colour
    path = plot_batch(batch, ["a", "b", "c"], tuple(mean.tolist()), tuple(std.tolist()), tmp_path / "batch.png")
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB")).reshape(-1, 3).astype(int)
    expected = np.round(colour.numpy() * 255).astype(int)
    assert (np.abs(pixels - expected).max(axis=1) <= 1).mean() > 0.3  # the images show that colour again


def test_show_batch_writes_batch_png_and_exits(tmp_path):
    data = write_image_folder(tmp_path / "images")
    out = tmp_path / "ckpt"
    run = subprocess.run([sys.executable, "finetune.py", "--data_dir", str(data), "--model", TINY_MODEL,
                          "--image_resize", "48", "--batch_size", "6", "--mixup", "0.8", "--num_parallel_workers",
                          "0", "--ckpt_save_dir", str(out), "--show_batch"],
                         cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert f"tunecv: a training batch: {out / 'batch.png'}" in run.stdout
    width, height = _png_size(out / "batch.png")
    assert width >= 800 and height >= 500  # 6 images: two rows of four
    assert not list(out.glob("*.pth")) and not (out / "results.txt").exists()  # it trains nothing


def test_finetune_and_validate_write_the_pictures(tmp_path):
    data = write_image_folder(tmp_path / "images")
    out = tmp_path / "ckpt"
    run = subprocess.run([sys.executable, "finetune.py", "--data_dir", str(data), "--model", TINY_MODEL,
                          "--pretrained", "false", "--image_resize", "32", "--batch_size", "4", "--epoch_size", "2",
                          "--num_parallel_workers", "0", "--device", "cpu", "--ckpt_save_dir", str(out)],
                         cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    _png_size(out / "curves.png")
    check = subprocess.run([sys.executable, "validate.py", "--ckpt_path", str(out / f"{TINY_MODEL}_best.pth"),
                            "--num_parallel_workers", "0"], cwd=ROOT, env=ENV, capture_output=True, text=True,
                           timeout=300)
    assert check.returncode == 0, check.stderr[-2000:]
    assert f"report: {out / 'report.txt'}" in check.stdout
    for picture in ("confusion_matrix.png", "top_losses.png", "reliability.png"):
        width, height = _png_size(out / picture)
        assert width >= 400 and height >= 300
    # report.txt's recall per class is pred.txt's share of right predictions in that class
    rows = [line.split("\t") for line in (out / "pred.txt").read_text().splitlines()[1:]]
    totals, right = Counter(r[2] for r in rows), Counter(r[2] for r in rows if r[1] == r[2])
    report = (out / "report.txt").read_text()
    for name, total in totals.items():
        match = re.search(rf"^\s*{name}\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+(\d+)$", report, re.MULTILINE)
        assert match and int(match[4]) == total
        assert float(match[2]) == pytest.approx(right[name] / total, abs=1e-4)


def test_show_batch_without_a_batch_is_one_line(tmp_path, capsys):
    from tunecv.scripts import finetune

    data = write_image_folder(tmp_path / "images", train_per_class=1, val_per_class=1, classes=("circle",))
    code = finetune.main(["--data_dir", str(data), "--model", TINY_MODEL, "--image_resize", "32",
                          "--num_parallel_workers", "0", "--ckpt_save_dir", str(tmp_path / "ckpt"), "--show_batch"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("tunecv: error: 1 training images give no batch of")
