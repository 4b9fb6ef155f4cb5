"""Atomic file writes: write a temp file beside the target, then rename; a crash never leaves half a file.

A full disk or a refused write becomes a one-line `UserError`; the previous file at the target stays intact.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tunecv.errors import UserError, write_failure

# torch.save to a file name writes from C++ and reports a failed write as a RuntimeError without an errno
TORCH_WRITE_FAILED = ("PytorchStreamWriter failed writing", "unexpected pos")
FULL_BELOW_BYTES = 1 << 20  # a write that failed with less free space than this ran out of it
# safetensors (Rust) reports one as SafetensorError("... No space left on device (os error 28)")
_RUST_IO_ERROR = re.compile(r"\(os error (\d+)\)")


@contextmanager
def atomic_target(path: str | os.PathLike) -> Iterator[str]:
    """Yields a temp path to write; it replaces `path` only if the block succeeds.

    Raises:
        UserError: the disk or quota is full, or the folder is read-only or not ours to write.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        yield tmp
        # after the write: mkstemp makes 0600, and writers that recreate the file (safetensors) do too; the user
        # expects their usual permissions
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except Exception as err:  # any writer's error type: OSError, torch's RuntimeError, SafetensorError
        # measured before the temp file is removed: its partial bytes are what filled the disk
        message = write_failure(failed_write_errno(err, path, _free_bytes(path.parent)), path)
        if message is None:
            raise
        raise UserError(message) from None
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def failed_write_errno(err: BaseException, path: Path, free_bytes: int | None) -> int | None:
    """The errno of a failed write of `path`, or None when `err` is not one (it is then re-raised as is).

    An OSError naming a file outside the target's folder was raised reading an input, not writing; Rust's
    "(os error N)" text carries the errno; torch's errno-less RuntimeError counts as a full disk only when the
    disk is in fact (nearly) full."""
    if isinstance(err, OSError):
        return err.errno if err.filename is None or _near(err.filename, path) else None
    if rust := _RUST_IO_ERROR.search(str(err)):
        return int(rust.group(1))
    if any(text in str(err) for text in TORCH_WRITE_FAILED) and free_bytes is not None \
            and free_bytes < FULL_BELOW_BYTES:
        return errno.ENOSPC
    return None


def _near(filename: object, path: Path) -> bool:
    """`filename` is the target, its temp file (beside it) or a folder on the way to it."""
    if not isinstance(filename, (str, bytes, os.PathLike)):
        return False
    name, target = Path(os.path.abspath(os.fsdecode(filename))), Path(os.path.abspath(path))
    return name.parent == target.parent or name in target.parents


def _free_bytes(folder: Path) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_target(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
