"""Stopping and resuming a run: the `_last` checkpoint to resume from, the random state a resumed run needs to
repeat the uninterrupted one exactly, and `GracefulStop` for SIGTERM / Ctrl-C."""

from __future__ import annotations

import logging
import os
import random
import signal
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tunecv.checkpoint import file_stem
from tunecv.errors import UserError

logger = logging.getLogger(__name__)


def find_last(resume: str, ckpt_save_dir: str | None, model_name: str, runs_root: str = "./ckpt") -> Path:
    """The checkpoint `resume` names: a path, or `auto`: the newest `<model>_last.pth` in ckpt_save_dir, or in
    the run folders under ./ckpt when ckpt_save_dir is left to its timestamped default."""
    if resume != "auto":
        path = Path(resume)
        if not path.is_file():
            raise UserError(f"resume: {path} not found; give a <model>_last.pth or resume: auto")
        return path
    name = f"{file_stem(model_name)}_last.pth"
    candidates = [Path(ckpt_save_dir) / name] if ckpt_save_dir else list(Path(runs_root).glob(f"*/{name}"))
    found = [path for path in candidates if path.is_file()]
    if not found:
        where = ckpt_save_dir or f"{runs_root}/*/"
        raise UserError(f"resume: auto found no {name} in {where}; start without --resume, or pass its path")
    return max(found, key=lambda path: path.stat().st_mtime)


def random_state() -> dict[str, Any]:
    """Python, NumPy and torch (CPU, CUDA) generator states, as tensors and lists that weights_only loads."""
    version, words, gauss = random.getstate()
    kind, keys, position, has_gauss, cached = np.random.get_state()
    state = {"python": [version, list(words), gauss], "torch": torch.get_rng_state(),
             "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached]}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_random_state(state: dict[str, Any]) -> None:
    version, words, gauss = state["python"]
    random.setstate((version, tuple(words), gauss))
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class RunStopped(Exception):
    """Training stopped on a signal after writing `_last`."""

    def __init__(self, signum: int, last_path: Path, where: str) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name} {where}; {last_path} holds the run")
        self.signum, self.last_path = signum, last_path


class GracefulStop:
    """While active, SIGTERM (preemption, torchrun) and SIGINT (Ctrl-C) ask training to stop after the current
    optimizer step, once `_last` is written; a second Ctrl-C stops at once (KeyboardInterrupt)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread
            self._previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGTERM, signal.SIGINT)}
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: object) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum
        logger.warning("%s: stopping after this step and saving the run; Ctrl-C again to stop at once "
                       "(pid %d)", signal.Signals(signum).name, os.getpid())
