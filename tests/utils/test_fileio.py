"""Atomic writes: a full disk or a refused write is one UserError line, the previous file stays, no temp file
is left. The failures are injected (an OSError at a write or at the rename): the files and torch.save are real."""

from __future__ import annotations

import errno
import os

import pytest
import torch

from tunecv.errors import UserError
from tunecv.train.checkpoint import load_checkpoint, save_checkpoint
from tunecv.utils import fileio
from tunecv.utils.fileio import atomic_target, atomic_write_text, failed_write_errno

FULL = "no space left on device writing {}; free some space or choose another ckpt_save_dir"


def _fail_replace(monkeypatch, code: int) -> None:
    def replace(src, dst):
        raise OSError(code, os.strerror(code), src, None, dst)
    monkeypatch.setattr(fileio.os, "replace", replace)


def _left(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_disk_full_mid_write_keeps_the_old_file(tmp_path, code):
    target = tmp_path / "results.txt"
    target.write_text("old\n")

    def write_half_then_fill(tmp: str) -> None:
        with open(tmp, "w") as handle:
            handle.write("new, half of it")
            handle.flush()
            raise OSError(code, os.strerror(code))

    with pytest.raises(UserError) as info:
        with atomic_target(target) as tmp:
            write_half_then_fill(tmp)
    assert str(info.value) == FULL.format(target)
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert target.read_text() == "old\n" and _left(tmp_path) == ["results.txt"]


def test_disk_full_at_the_rename_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "config.yaml"
    target.write_text("lr: 0.1\n")
    _fail_replace(monkeypatch, errno.ENOSPC)
    with pytest.raises(UserError, match="^no space left on device writing .*config.yaml; free some space"):
        atomic_write_text(target, "lr: 0.2\n")
    assert target.read_text() == "lr: 0.1\n" and _left(tmp_path) == ["config.yaml"]


@pytest.mark.parametrize("code, why", [(errno.EROFS, "read-only file system"), (errno.EACCES, "permission denied")])
def test_refused_write_is_one_line(tmp_path, monkeypatch, code, why):
    target = tmp_path / "metrics.json"
    _fail_replace(monkeypatch, code)
    with pytest.raises(UserError) as info:
        atomic_write_text(target, "{}\n")
    message = str(info.value)
    assert message.startswith(f"cannot write {target} ({why}); ") and "ckpt_save_dir" in message
    assert "\n" not in message and _left(tmp_path) == []


def test_other_errors_pass_unchanged_and_leave_no_temp_file(tmp_path):
    target = tmp_path / "a.txt"
    with pytest.raises(OSError) as info, atomic_target(target):
        raise OSError(errno.EIO, "Input/output error")
    assert info.value.errno == errno.EIO and _left(tmp_path) == []
    with pytest.raises(ValueError), atomic_target(target):
        raise ValueError("a bug")
    assert _left(tmp_path) == []


def test_a_file_read_while_writing_is_not_the_write(tmp_path):
    """EACCES opening an input elsewhere is that input's problem, not 'cannot write <target>'."""
    target = tmp_path / "out" / "cache.bin"
    elsewhere = tmp_path / "images" / "a.png"
    with pytest.raises(PermissionError), atomic_target(target):
        raise PermissionError(errno.EACCES, "Permission denied", str(elsewhere))
    assert failed_write_errno(OSError(errno.EACCES, "x", str(target.parent / ".cache.bin.1.tmp")), target, None) \
        == errno.EACCES
    assert failed_write_errno(OSError(errno.EROFS, "x", str(tmp_path)), target, None) == errno.EROFS  # mkdir


@pytest.mark.parametrize("text, free_bytes, expected", [
    # what torch.save to a file name raises when the disk fills (checked on a 256 KiB tmpfs)
    ("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534", 0, errno.ENOSPC),
    ("PytorchStreamWriter failed writing file data/0: file write failed", 4096, errno.ENOSPC),
    ("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534", 10 << 30, None),  # not a full disk
    ("PytorchStreamWriter failed writing file data/0: file write failed", None, None),
    ("mat1 and mat2 shapes cannot be multiplied", 0, None),
])
def test_torch_write_failures(text, free_bytes, expected, tmp_path):
    assert failed_write_errno(RuntimeError(text), tmp_path / "m.pth", free_bytes) == expected


def test_rust_io_errors_carry_their_errno(tmp_path):
    # safetensors' SafetensorError is a plain Exception subclass with Rust's io::Error text
    err = Exception("Error while serializing: I/O error: No space left on device (os error 28)")
    assert failed_write_errno(err, tmp_path / "m.safetensors", 10 << 30) == errno.ENOSPC


def test_checkpoint_save_failing_at_the_rename_keeps_the_older_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "tiny_last.pth"
    older = {"model": {"weight": torch.arange(6.0).reshape(2, 3)}, "config": {"lr": 0.1}, "classes": ["a", "b"],
             "epoch": 1}
    save_checkpoint(older, path)
    _fail_replace(monkeypatch, errno.ENOSPC)
    newer = {**older, "model": {"weight": torch.zeros(2, 3)}, "epoch": 2}
    with pytest.raises(UserError, match=f"^no space left on device writing {path}; "):
        save_checkpoint(newer, path)
    monkeypatch.undo()
    assert _left(tmp_path) == ["tiny_last.pth"]
    loaded = load_checkpoint(path)
    assert loaded["epoch"] == 1 and torch.equal(loaded["model"]["weight"], older["model"]["weight"])
    assert torch.load(path, weights_only=True)["classes"] == ["a", "b"]
