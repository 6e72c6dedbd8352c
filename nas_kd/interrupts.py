"""Ctrl-C that lands in a finalizer is neither lost nor printed as a traceback.

Python runs garbage-collector finalizers and weakref callbacks (SQLAlchemy's connection pool has
many) wherever an object dies. A SIGINT whose handler raises KeyboardInterrupt inside one cannot
propagate: the interpreter hands it to `sys.unraisablehook`, whose default prints
"Exception ignored in ... KeyboardInterrupt" with a traceback and drops it, so the process runs on
as if the key was never pressed. `keep_lost_interrupts` installs a hook that instead re-arms the
interrupt (`_thread.interrupt_main` from a helper thread: the SIGINT handler runs again at the next
point where Python code runs normally) and prints nothing; every other unraisable exception goes
to the hook that was installed before.
"""

from __future__ import annotations

import _thread
import signal
import sys
import threading

__all__ = ["keep_lost_interrupts"]


def _rearm_lost_interrupts(unraisable, previous) -> None:
    if isinstance(unraisable.exc_value, KeyboardInterrupt) and threading.current_thread() is threading.main_thread():
        # Called from the main thread, interrupt_main would run the handler at once, inside this
        # hook, and lose the interrupt again; from another thread it only marks SIGINT pending,
        # and the main thread runs its handler at the next point where Python code runs (should
        # that be another finalizer, this hook re-arms it again). A bare thread: threading.Thread
        # waits for its start, and the interrupt would land in that wait.
        try:
            _thread.start_new_thread(_thread.interrupt_main, (signal.SIGINT,))
        except RuntimeError:  # interpreter shutting down: nothing left to interrupt
            pass
        return
    previous(unraisable)


def keep_lost_interrupts() -> None:
    """Install the re-arming hook (idempotent; chains to the hook in place before)."""
    if getattr(sys.unraisablehook, "rearms_interrupts", False):
        return
    previous = sys.unraisablehook

    def _hook(unraisable) -> None:
        _rearm_lost_interrupts(unraisable, previous)

    _hook.rearms_interrupts = True
    sys.unraisablehook = _hook
