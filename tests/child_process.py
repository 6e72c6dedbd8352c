"""What the tests that signal a search subprocess share."""

import signal


def ctrl_c_reaches_it() -> None:
    """A Popen ``preexec_fn``: SIGINT back to its default in the child. A shell starts background
    jobs with SIGINT ignored, and Python then installs no KeyboardInterrupt handler: under
    `pytest ... &` the search would never see a test's Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def echo_after(seconds: float) -> float:
    """A `map_processes` task: its argument back, ``seconds`` later."""
    import time

    time.sleep(seconds)
    return seconds
