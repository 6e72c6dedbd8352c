"""The exception types the CLI reports in one line, with no traceback.

A `UserError` (bad input) becomes one line on stderr and exit code 2. Its message names the
problem *and* the fix, e.g. ``unknown dataset 'foo': choose one of ...``. A `NonFiniteLossError`
(a run whose loss became NaN or inf) becomes one line and exit code 1: nothing in the command
line was malformed, but what the user can change (a learning rate, a teacher) is named.
"""

from __future__ import annotations

__all__ = ["UserError", "NonFiniteLossError", "EXIT_USAGE", "EXIT_DIVERGED", "one_line"]

EXIT_USAGE = 2
EXIT_DIVERGED = 1


class UserError(Exception):
    """Bad input: a wrong option, file, budget or dataset. The message is shown as it is."""

    def __init__(self, message: str):
        # One line only: the CLI prints exactly this, and tests compare it verbatim.
        super().__init__(" ".join(str(message).split()))


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or inf. A search records the trial as failed with this reason; the CLI
    prints it with ``hint`` (what to change, where the raiser knows; else the command's own)."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.hint = hint


def one_line(exc: BaseException, limit: int | None = None) -> str:
    """``Type: first line of the message`` (cut to ``limit`` characters): how a failure is recorded
    where a traceback would not fit (a trial's reason, a log line, a bench table cell)."""
    text = str(exc)
    return f"{type(exc).__name__}: {text.splitlines()[0][:limit] if text else ''}"
