"""Progress bars: tqdm on a terminal only (tqdm's `disable=None`), not under --quiet, and on the first process of a
distributed run only. Their final state goes to the log as each epoch's line (`fit`), not as bar redraws."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from tqdm import tqdm

from tunecv.utils import distributed


def progress_bar(iterable: Iterable | None = None, **kwargs: Any) -> tqdm:
    """A transient bar (it clears itself when done) that follows the terminal's width."""
    hidden = _console_quiet() or not distributed.is_main()
    return tqdm(iterable, leave=False, dynamic_ncols=True, disable=True if hidden else None, **kwargs)


def _console_quiet() -> bool:
    """--quiet set the console to warnings (`cli.setup_logging`): a bar, which is information, follows it."""
    consoles = [h for h in logging.getLogger().handlers
                if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)]
    return bool(consoles) and all(h.level > logging.INFO for h in consoles)
