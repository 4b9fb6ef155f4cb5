"""The one exception the user can fix; entry scripts print it as one line and exit 2."""

from __future__ import annotations

_WORKER_MARKER = "Original Traceback"


class UserError(Exception):
    """Something the user can fix: bad config, missing data, incompatible checkpoint."""

    def __init__(self, message: str) -> None:
        # DataLoader workers re-raise errors as UserError(<traceback text>); keep only our sentence.
        if _WORKER_MARKER in message:
            message = message.rstrip().splitlines()[-1].split("UserError: ", 1)[-1]
        super().__init__(message)
