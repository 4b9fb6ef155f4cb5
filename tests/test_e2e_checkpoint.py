"""Checkpoint formats as a user meets them: finetune.py --save_format safetensors then validate.py on the
.safetensors file, validate.py on crafted checkpoints, and a code-running pickle refused without a traceback."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import CLASSES, TINY_MODEL, VAL_PER_CLASS, write_image_folder
from tunecv.models.factory import create_model
from tunecv.scripts import validate
from tunecv.train.checkpoint import CheckpointSaver, load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # see conftest: one thread on 2 cores
SCORE = re.compile(r"(\d+) images: loss (\S+)  top1 (\d+\.\d\d)")


def _run(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, script, *args], cwd=ROOT, env=ENV, capture_output=True, text=True,
                          timeout=300)


def test_finetune_safetensors_then_validate_reproduces_best_top1(tmp_path):
    data = write_image_folder(tmp_path / "images")
    out = tmp_path / "ckpt"
    proc = _run("finetune.py", "--data_dir", str(data), "--model", TINY_MODEL, "--pretrained", "false",
                "--image_resize", "32", "--batch_size", "4", "--epoch_size", "1", "--lr", "0.01",
                "--num_parallel_workers", "0", "--device", "cpu", "--seed", "7", "--ckpt_save_dir", str(out),
                "--overwrite", "true", "--save_format", "safetensors")
    assert proc.returncode == 0, proc.stderr[-3000:]
    names = {p.name for p in out.iterdir()}
    assert {f"{TINY_MODEL}_best.safetensors", f"{TINY_MODEL}_best.json", f"{TINY_MODEL}_last.pth"} <= names
    assert f"{TINY_MODEL}_best.pth" not in names and not [n for n in names if n.endswith(".tmp")]
    best_top1 = (out / "results.txt").read_text().splitlines()[-1].split()[2]  # "best top1 X at epoch N"

    proc = _run("validate.py", "--ckpt_path", str(out / f"{TINY_MODEL}_best.safetensors"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    match = SCORE.search(proc.stdout)
    assert match, proc.stdout
    assert int(match.group(1)) == len(CLASSES) * VAL_PER_CLASS and match.group(3) == best_top1


@pytest.fixture
def saved(tiny_cfg, tmp_path) -> CheckpointSaver:
    """An untrained tiny model saved as a real tunecv checkpoint in both formats (no training needed)."""
    model = create_model(tiny_cfg.model, num_classes=len(CLASSES))
    for save_format in ("pth", "safetensors"):
        CheckpointSaver(tmp_path / save_format, TINY_MODEL, tiny_cfg.to_flat(), list(CLASSES),
                        save_format=save_format).save(model, epoch=1, metrics={}, is_best=True)
    return tmp_path


def _validate(capsys, *args: str) -> tuple[re.Match, str]:
    """The score line of an in-process validate.py run, and its stderr (validate.py sets up its own logging)."""
    assert validate.main(list(args)) == 0
    captured = capsys.readouterr()
    match = SCORE.search(captured.out)
    assert match, captured.out
    return match, captured.err


def test_validate_reads_safetensors_like_pth(capsys, saved):
    pth, _ = _validate(capsys, "--ckpt_path", str(saved / "pth" / f"{TINY_MODEL}_best.pth"))
    safetensors, err = _validate(capsys, "--ckpt_path", str(saved / "safetensors" / f"{TINY_MODEL}_best.safetensors"))
    assert safetensors.groups() == pth.groups() and "warning" not in err


def test_validate_warns_when_the_data_lacks_checkpoint_classes(capsys, saved, tmp_path):
    fewer = write_image_folder(tmp_path / "fewer", classes=("circle", "square"))
    match, err = _validate(capsys, "--ckpt_path", str(saved / "safetensors" / f"{TINY_MODEL}_best.safetensors"),
                           "--data_dir", str(fewer))
    assert int(match.group(1)) == 2 * VAL_PER_CLASS
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert warnings == ["warning: val has images of 2 of the checkpoint's 3 classes, none of 1 (e.g. stripes); "
                        "its top-1 covers the 2 others only"]


def test_validate_without_sidecar_exit_2_one_line(capsys, saved):
    weights = saved / "safetensors" / f"{TINY_MODEL}_best.safetensors"
    weights.with_suffix(".json").unlink()
    assert validate.main(["--ckpt_path", str(weights)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tunecv: error: ") and f"{TINY_MODEL}_best.json" in err[0]


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_validate_refuses_a_code_running_pickle(saved, tmp_path):
    marker = tmp_path / "pwned"
    checkpoint = load_checkpoint(saved / "pth" / f"{TINY_MODEL}_best.pth")
    evil = tmp_path / "evil_best.pth"
    torch.save({**checkpoint, "extra": _Exploit(marker)}, evil)
    proc = _run("validate.py", "--ckpt_path", str(evil))
    assert proc.returncode == 2 and not marker.exists()
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert err[0].startswith(f"tunecv: error: {evil} is not a readable checkpoint (it holds Python objects besides "
                             "tensors, and unpickling those could run code)")
