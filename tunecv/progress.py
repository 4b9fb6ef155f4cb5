"""Progress bars: tqdm on a terminal only (tqdm's `disable=None`), never under --quiet, and on the first process of
a distributed run only. Their final state goes to the log as each epoch's line (`fit`), not as bar redraws."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tqdm import tqdm

from tunecv import distributed

_quiet = False


def set_quiet(quiet: bool) -> None:
    global _quiet
    _quiet = quiet


def progress_bar(iterable: Iterable | None = None, **kwargs: Any) -> tqdm:
    """A transient bar (it clears itself when done) that follows the terminal's width."""
    hidden = _quiet or not distributed.is_main()
    return tqdm(iterable, leave=False, dynamic_ncols=True, disable=True if hidden else None, **kwargs)
