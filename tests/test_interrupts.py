"""nas_kd.interrupts: a Ctrl-C that lands in a finalizer stops the process, silently."""

import subprocess
import sys

import pytest

from tests.child_process import ctrl_c_reaches_it

# The SIGINT arrives while a weakref callback runs (as SQLAlchemy's do, wherever the garbage
# collector frees a pooled connection): its KeyboardInterrupt cannot propagate from there.
_SIGINT_IN_A_FINALIZER = """
import signal, sys, time, weakref
from nas_kd.interrupts import keep_lost_interrupts
from nas_kd.jobs import _interrupt_unless_stopping
if sys.argv[1] == "worker":
    signal.signal(signal.SIGINT, _interrupt_unless_stopping)
keep_lost_interrupts()
keep_lost_interrupts()  # a second call (cli, then a worker) is harmless
class Pooled:
    pass
item = Pooled()
ref = weakref.ref(item, lambda r: signal.raise_signal(signal.SIGINT))
try:
    del item
    for _ in range(300):
        time.sleep(0.01)
    print("ran on")
except KeyboardInterrupt:
    print("stopped")
"""

# Anything else raised in a finalizer is still reported by the hook installed before.
_VALUE_ERROR_IN_A_FINALIZER = """
import weakref
from nas_kd.interrupts import keep_lost_interrupts
keep_lost_interrupts()
class Pooled:
    pass
item = Pooled()
def fail(r):
    raise ValueError("finalizer failed")
ref = weakref.ref(item, fail)
del item
print("went on")
"""


def _run(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=60, preexec_fn=ctrl_c_reaches_it)


@pytest.mark.parametrize("handler", ["default", "worker"])
def test_a_ctrl_c_lost_in_a_finalizer_still_stops_and_prints_nothing(handler):
    # Without the hook: "ran on" and an "Exception ignored ... KeyboardInterrupt" traceback.
    done = _run(_SIGINT_IN_A_FINALIZER, handler)
    assert done.stdout.strip() == "stopped" and done.stderr == "", (done.stdout, done.stderr)


def test_other_errors_in_finalizers_are_still_reported():
    done = _run(_VALUE_ERROR_IN_A_FINALIZER)
    assert done.stdout.strip() == "went on"
    assert "Exception ignored" in done.stderr and "ValueError: finalizer failed" in done.stderr


def test_installing_the_hook_again_adds_no_layer(monkeypatch):
    """The CLI and every worker install it, and a test session calls the CLI hundreds of times:
    each call must leave the one hook in place, not wrap it once more (the chain would grow
    with every call)."""
    from nas_kd.interrupts import keep_lost_interrupts

    monkeypatch.setattr(sys, "unraisablehook", sys.__unraisablehook__)
    keep_lost_interrupts()
    installed = sys.unraisablehook
    keep_lost_interrupts()
    assert sys.unraisablehook is installed and installed is not sys.__unraisablehook__


def test_a_held_ctrl_c_reaches_the_handler_that_was_in_place_once_released():
    """HeldInterrupts (the trial claim's, nas_kd.workers): SIGINTs during the hold are counted,
    none raised; release puts the handler back and runs it once; an ignored SIGINT stays ignored."""
    import os
    import signal

    from nas_kd.interrupts import HeldInterrupts

    seen = []
    before = signal.signal(signal.SIGINT, lambda signum, frame: seen.append(signum))
    try:
        held = HeldInterrupts().hold()
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)
        assert seen == [] and held.count == 2
        held.release()
        assert seen == [signal.SIGINT] and held.count == 0  # once: one interruption, however often pressed
        held.release()  # a second release changes nothing
        assert seen == [signal.SIGINT]
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        held = HeldInterrupts().hold()
        os.kill(os.getpid(), signal.SIGINT)
        held.release()  # nothing raised
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)
