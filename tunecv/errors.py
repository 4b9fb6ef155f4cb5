"""The one exception the user can fix, and the one-line messages for run-time failures the user can fix
(full disk, CUDA out of memory); entry scripts print them as one line and exit 2. Imports nothing of tunecv."""

from __future__ import annotations

import errno
import re

_WORKER_MARKER = "Original Traceback"
# optional dependencies: what to install (from a clone, or as the package's extra)
TENSORBOARD_MISSING = ("log_tensorboard: true needs the tensorboard package: pip install -r "
                       "requirements-tensorboard.txt (or pip install \"tunecv[tensorboard]\"), or set "
                       "log_tensorboard false")
ONNX_MISSING = ("ONNX export needs the export extra: pip install -r requirements-export.txt "
                "(or pip install \"tunecv[export]\")")
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)  # a full disk and a full quota need the same fix
NO_ACCESS = {errno.EROFS: "read-only file system", errno.EACCES: "permission denied"}
# torch's C++ writers (shared memory of DataLoader workers) report a full /dev/shm as a RuntimeError
_SHM_FULL = re.compile(r"unable to (write to file|allocate shared memory).*(No space left on device|\(28\))")
_TRIED = re.compile(r"Tried to allocate ([\d.]+ [KMGT]?i?B)")


class UserError(Exception):
    """Something the user can fix: bad config, missing data, incompatible checkpoint."""

    def __init__(self, message: str) -> None:
        # DataLoader workers re-raise errors as UserError(<traceback text>); keep only our sentence.
        if _WORKER_MARKER in message:
            message = re.sub(r"^[\w.]+: ", "", message.rstrip().splitlines()[-1])
        super().__init__(message)


class CacheChanged(UserError):
    """A cache file changed under a running job: not an unreadable image, so never skipped."""


def write_failure(code: int | None, path: object = None) -> str | None:
    """The message for a write (of `path`, when known) that failed with errno `code`, or None when it is not
    a full disk or a refused write."""
    writing = f" writing {path}" if path is not None else ""
    if code in NO_SPACE:
        return f"no space left on device{writing}; free some space or choose another ckpt_save_dir"
    if code in NO_ACCESS:
        return f"cannot write {path} ({NO_ACCESS[code]}); make its folder writable or choose another ckpt_save_dir"
    return None


# out-of-memory advice in each task's keys: (what sets the input size, how to keep the global batch's effect)
OOM_ADVICE = {"classification": ("image_resize", "raise gradient_accumulation_steps to keep the global batch"),
              "detection": ("min_size / max_size", "the lr with it (or auto_scale_lr)")}


def runtime_failure(exc: BaseException, batch_size: int | None = None, task: str = "classification") -> str | None:
    """One line for a failure during a run that the user fixes by changing the config or the machine (no
    traceback helps them), or None for anything else (a bug: let it raise). `task`: advice in its keys."""
    if _is_out_of_memory(exc):
        device = "MPS" if "MPS" in str(exc) else "CUDA"
        tried = _TRIED.search(str(exc))
        where = f" at batch_size {batch_size}" if batch_size else ""
        detail = f" (tried to allocate {tried.group(1)})" if tried else ""
        size, keep = OOM_ADVICE[task]
        if batch_size == 1:  # nothing left to split
            return f"{device} out of memory{where}{detail}; set amp_level O2, or lower {size} or the model size"
        smaller = f" (e.g. {batch_size // 2})" if batch_size else ""
        return (f"{device} out of memory{where}{detail}; lower batch_size{smaller} and {keep}, or set amp_level O2, "
                f"or lower {size}")
    if isinstance(exc, OSError) and exc.errno in NO_SPACE:
        return write_failure(exc.errno, exc.filename)
    if isinstance(exc, RuntimeError) and _SHM_FULL.search(str(exc)):
        return ("shared memory (/dev/shm) is full; lower num_parallel_workers, or give the container more "
                "(docker run --shm-size 8g)")
    return None


def _is_out_of_memory(exc: BaseException) -> bool:
    import torch  # here, not at the top: a config error need not wait for torch to load

    # a RuntimeError with the text: torch before 2.1, and errors re-raised from another thread or process
    text = str(exc)
    return isinstance(exc, torch.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and ("CUDA out of memory" in text or "MPS backend out of memory" in text))
