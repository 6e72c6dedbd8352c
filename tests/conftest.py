import atexit
import os
import shutil
import tempfile

import pytest

# Tests never reach for the network: a missing dataset must fail fast with its message.
os.environ.setdefault("NAS_KD_NO_DOWNLOAD", "1")
# Latency tables (nas_kd.latency) are measured into a fresh folder, never the user's ~/.cache,
# removed when the session that made it ends (worker processes inherit the variable, not the folder).
if "NAS_KD_CACHE" not in os.environ:
    os.environ["NAS_KD_CACHE"] = tempfile.mkdtemp(prefix="nas-kd-cache-")
    atexit.register(shutil.rmtree, os.environ["NAS_KD_CACHE"], ignore_errors=True)


@pytest.fixture(autouse=True)
def step_options_restored():
    """A test that configures the step (a search's --gpu-step, a bench's switches) leaves the next
    test the options it found: a leaked graph=1 turned the next test's eager rows into graphed ones."""
    from nas_kd.device import configure_step, step_options

    before = step_options()
    yield
    configure_step(before)


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """Test-sized tensors are too small to split across threads; on a busy 2-core machine
    OpenMP spin-waiting makes multi-threaded batch-2 steps 5-50x slower."""
    from nas_kd.device import torch_threads

    with torch_threads(1):
        yield


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run in an empty folder so ./data and ./runs are the test's own."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def cli(capsys):
    """Run `nas-kd ARGS`; return (exit code, stdout, stderr)."""
    from nas_kd.cli import main

    def run(*args):
        code = main([str(a) for a in args])
        out = capsys.readouterr()
        return code, out.out, out.err

    return run
