"""compile: true, end to end: finetune.py compiles the model in place; its checkpoints keep the plain keys."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from conftest import CLASSES, TINY_MODEL, write_image_folder
from tunecv.config import ModelConfig
from tunecv.models.factory import create_model

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def test_compiled_run_writes_plain_checkpoints(tmp_path):
    """~40 s on 2 cores with a cold inductor cache (~10 s warm); no validation: one graph fewer to compile."""
    data_dir = write_image_folder(tmp_path / "images")  # 24 + 12 images: full batches of 4, no recompile
    out = tmp_path / "ckpt"
    proc = subprocess.run(
        [sys.executable, "finetune.py", "--data_dir", str(data_dir), "--model", TINY_MODEL, "--pretrained", "false",
         "--image_resize", "32", "--batch_size", "4", "--epoch_size", "1", "--num_parallel_workers", "0",
         "--device", "cpu", "--seed", "3", "--compile", "true", "--val_while_train", "false",
         "--ckpt_save_dir", str(out)],
        cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "torch.compile" in (out / "train.log").read_text()  # the run summary says it compiled
    expected = set(create_model(ModelConfig(model=TINY_MODEL), num_classes=len(CLASSES)).state_dict())
    for name in (f"{TINY_MODEL}_best.pth", f"{TINY_MODEL}_last.pth"):
        state = torch.load(out / name, weights_only=True)["model"]
        assert not [key for key in state if "_orig_mod" in key]
        assert set(state) == expected


def test_compile_without_a_compiler_is_one_clear_error(monkeypatch):
    import pytest

    from tunecv.errors import UserError
    from tunecv.utils.runtime import Compute

    monkeypatch.setenv("PATH", "")
    monkeypatch.delenv("CXX", raising=False)
    with pytest.raises(UserError, match="needs a C.. compiler"):
        Compute.create(torch.device("cpu"), "O0", channels_last=False, compile=True)
    assert Compute.create(torch.device("cpu"), "O0", channels_last=False).compile is False
