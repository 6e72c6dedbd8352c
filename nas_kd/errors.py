"""The one exception type for mistakes a user can fix.

The CLI turns a `UserError` into one line on stderr and exit code 2, with no traceback. Its
message names the problem *and* the fix, e.g. ``unknown dataset 'foo': choose one of ...``.
"""

from __future__ import annotations

__all__ = ["UserError", "EXIT_USAGE", "one_line"]

EXIT_USAGE = 2


class UserError(Exception):
    """Bad input: a wrong option, file, budget or dataset. The message is shown as it is."""

    def __init__(self, message: str):
        # One line only: the CLI prints exactly this, and tests compare it verbatim.
        super().__init__(" ".join(str(message).split()))


def one_line(exc: BaseException, limit: int | None = None) -> str:
    """``Type: first line of the message`` (cut to ``limit`` characters): how a failure is recorded
    where a traceback would not fit (a trial's reason, a log line, a bench table cell)."""
    text = str(exc)
    return f"{type(exc).__name__}: {text.splitlines()[0][:limit] if text else ''}"
