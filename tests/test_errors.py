"""The one-line messages for run-time failures the user can fix (CUDA out of memory, a full disk), built from
real exception objects; anything else is None, so the entry scripts let it raise with its traceback."""

from __future__ import annotations

import errno

import pytest
import torch

from tunecv.errors import UserError, runtime_failure, write_failure

TORCH_OOM = ("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.10 GiB of which "
             "1.06 GiB is free. Of the allocated memory 75.2 GiB is allocated by PyTorch")


def test_torch_out_of_memory_error():
    message = runtime_failure(torch.OutOfMemoryError(TORCH_OOM), batch_size=64)
    assert message == ("CUDA out of memory at batch_size 64 (tried to allocate 2.00 GiB); lower batch_size "
                       "(e.g. 32) and raise gradient_accumulation_steps to keep the global batch, or set amp_level "
                       "O2, or lower image_resize")


def test_out_of_memory_advice_of_a_detection_run_names_its_keys():
    message = runtime_failure(torch.OutOfMemoryError(TORCH_OOM), batch_size=4, task="detection")
    assert "lower batch_size (e.g. 2) and the lr with it (or auto_scale_lr)" in message
    assert message.endswith("or lower min_size / max_size") and "image_resize" not in message
    assert "gradient_accumulation_steps" not in message


def test_out_of_memory_as_a_runtime_error_text():
    """torch < 2.1, or re-raised from elsewhere: only the text says so."""
    message = runtime_failure(RuntimeError("CUDA out of memory. Tried to allocate 20.00 MiB"))
    assert message.startswith("CUDA out of memory (tried to allocate 20.00 MiB); lower batch_size and raise")
    assert runtime_failure(torch.OutOfMemoryError("CUDA out of memory."), batch_size=1) == \
        "CUDA out of memory at batch_size 1; set amp_level O2, or lower image_resize or the model size"


def test_disk_full_not_translated_at_the_write():
    assert runtime_failure(OSError(errno.ENOSPC, "No space left on device", "/runs/a/train.log")) == \
        "no space left on device writing /runs/a/train.log; free some space or choose another ckpt_save_dir"
    assert runtime_failure(OSError(errno.EDQUOT, "Disk quota exceeded")) == \
        "no space left on device; free some space or choose another ckpt_save_dir"


def test_full_shared_memory():
    err = RuntimeError("unable to write to file </torch_18693_3095_0>: No space left on device (28)")
    assert runtime_failure(err).startswith("shared memory (/dev/shm) is full; lower num_parallel_workers")


@pytest.mark.parametrize("exc", [
    RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x10 and 12x3)"),
    OSError(errno.EIO, "Input/output error"),
    FileNotFoundError(errno.ENOENT, "No such file or directory", "x.png"),
    ValueError("out of memory"),
    KeyboardInterrupt(),
    UserError("already one line"),
])
def test_anything_else_is_none(exc):
    assert runtime_failure(exc, batch_size=8) is None


def test_write_failure_lines():
    assert write_failure(errno.EROFS, "/mnt/ro/config.yaml") == (
        "cannot write /mnt/ro/config.yaml (read-only file system); make its folder writable or choose another "
        "ckpt_save_dir")
    assert write_failure(errno.EIO, "x") is None and write_failure(None, "x") is None
