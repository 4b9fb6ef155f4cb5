"""The one exception the user can fix; entry scripts print it as one line and exit 2."""

from __future__ import annotations

import re

_WORKER_MARKER = "Original Traceback"


class UserError(Exception):
    """Something the user can fix: bad config, missing data, incompatible checkpoint."""

    def __init__(self, message: str) -> None:
        # DataLoader workers re-raise errors as UserError(<traceback text>); keep only our sentence.
        if _WORKER_MARKER in message:
            message = re.sub(r"^[\w.]+: ", "", message.rstrip().splitlines()[-1])
        super().__init__(message)


class CacheChanged(UserError):
    """A cache file changed under a running job: not an unreadable image, so never skipped."""
