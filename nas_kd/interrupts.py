"""Ctrl-C that lands in a finalizer, or in a step that must not be cut, is neither lost nor
printed as a traceback.

Python runs garbage-collector finalizers and weakref callbacks (SQLAlchemy's connection pool has
many) wherever an object dies. A SIGINT whose handler raises KeyboardInterrupt inside one cannot
propagate: the interpreter hands it to `sys.unraisablehook`, whose default prints
"Exception ignored in ... KeyboardInterrupt" with a traceback and drops it, so the process runs on
as if the key was never pressed. `keep_lost_interrupts` installs a hook that instead re-arms the
interrupt (`_thread.interrupt_main` from a helper thread: the SIGINT handler runs again at the next
point where Python code runs normally) and prints nothing; every other unraisable exception goes
to the hook that was installed before.

`HeldInterrupts` holds a Ctrl-C that arrives during a short stretch that must finish whole (a
trial claimed in the study but not yet in the code that fails it on an interrupt), and delivers
it where the caller can clean up.
"""

from __future__ import annotations

import _thread
import signal
import sys
import threading

__all__ = ["keep_lost_interrupts", "HeldInterrupts"]


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


class HeldInterrupts:
    """Hold SIGINT (Ctrl-C) for a short stretch that must finish whole, then deliver it where the
    caller can clean up: ``held = HeldInterrupts().hold()`` ... ``held.release()``. Outside the
    main thread, where Python delivers no signal, holding changes nothing."""

    def __init__(self):
        self.count = 0  # SIGINTs that arrived while held
        self._holding = False
        self._previous = None  # the handler in place before `hold`

    def hold(self) -> HeldInterrupts:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._count)
            self._holding = True
        return self

    def _count(self, _signum, _frame) -> None:
        self.count += 1

    def release(self) -> None:
        """Put the previous handler back and run it once if a SIGINT arrived meanwhile (the
        default raises KeyboardInterrupt here; an ignored SIGINT stays ignored)."""
        if not self._holding:
            return
        self._holding = False
        # None: a handler installed outside Python, which Python cannot put back; the default's
        # action (end the process) is what a Ctrl-C then does.
        handler = signal.SIG_DFL if self._previous is None else self._previous
        signal.signal(signal.SIGINT, handler)
        if self.count:
            self.count = 0
            if callable(handler):
                handler(signal.SIGINT, None)
            elif handler == signal.SIG_DFL:
                raise KeyboardInterrupt
