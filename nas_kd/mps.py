"""A private CUDA MPS server for one search's trial processes (``--gpu-step mps=1``).

Why: `nas-kd search --jobs N` runs N processes on one GPU, each launching a tiny student's
kernels. Without MPS the device runs the kernels of one process (one CUDA context) at a time and
switches between them; a tiny student's kernel fills a few of the H100's 132 multiprocessors, so
most of the device idles inside every slice. Through an MPS server the processes' kernels run on
the device at the same time (NVIDIA, "When to Use MPS": processes that launch grids of few
blocks). Whether that pays for this project's trials is measured by the GPU bench's jobs section
(`bench.gpu_sizes`: ``--jobs 8`` with and without ``mps=1``).

How: the search's parent starts an MPS control daemon of its own (``nvidia-cuda-mps-control -d``)
with its pipe and log directories in a fresh temporary directory, so it meets no other user's MPS,
and puts those directories in its environment before anything in the process initialises CUDA
(the driver connects to a daemon when CUDA is first initialised, and never later). Its children
(the trial processes, the final retrain's pool) inherit the environment and connect through the
same server. A probe process then initialises CUDA the same way and the daemon is asked for its
servers: only a server that exists proves the clients go through MPS. When the daemon's program is
missing, will not start, or the probe fails, the search says so in one line and trains without MPS
(the processes then time-share the device, as without the switch). At the end the daemon is told
to quit (without waiting on it: the daemon may answer only once this process, its last client,
has ended), the environment restored and the directory removed, whatever ended the search.

A user who runs MPS already (``CUDA_MPS_PIPE_DIRECTORY`` set) keeps it: nothing is started.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = ["CONTROL", "PIPE_ENV", "LOG_ENV", "PROBE", "mps_server", "device_sharing"]

CONTROL = "nvidia-cuda-mps-control"
PIPE_ENV, LOG_ENV = "CUDA_MPS_PIPE_DIRECTORY", "CUDA_MPS_LOG_DIRECTORY"
# What a trial process does first on the device: initialise CUDA and allocate.
PROBE = "import torch; torch.zeros(1, device='cuda').add_(1); torch.cuda.synchronize()"
START_SECONDS = 30.0  # the daemon's start, and its answer to a command
PROBE_SECONDS = 120.0  # the probe imports torch and makes a context
# The quit is sent while this process, a client, still holds its CUDA context: the daemon may wait
# for it to end before it answers, and it ends with this process anyway; the search does not wait.
QUIT_SECONDS = 5.0


def _control(control: str, env: dict[str, str], command: str | None = None, daemon: bool = False, timeout: float = START_SECONDS) -> subprocess.CompletedProcess:
    args = [control, "-d"] if daemon else [control]
    return subprocess.run(args, input=None if daemon else f"{command}\n", env=env, capture_output=True, text=True, timeout=timeout, check=False)


def _why(done: subprocess.CompletedProcess) -> str:
    text = (done.stderr or done.stdout or "").strip().splitlines()
    return f"exit code {done.returncode}" + (f": {text[-1][:160]}" if text else "")


@contextlib.contextmanager
def mps_server(log: Callable[[str], None]) -> Iterator[str | None]:
    """Run the body with this process's environment pointing at a private MPS server; yields its
    pipe directory, or None where MPS could not be had (said in one line through ``log``). Call
    before this process initialises CUDA (see the module docstring)."""
    if os.environ.get(PIPE_ENV):
        log(f"mps: using the MPS daemon already set up ({PIPE_ENV}={os.environ[PIPE_ENV]})")
        yield os.environ[PIPE_ENV]
        return
    control = shutil.which(CONTROL)
    if control is None:
        log(f"mps: {CONTROL} not found (the NVIDIA driver's utilities); the trial processes time-share the device")
        yield None
        return
    root = Path(tempfile.mkdtemp(prefix="nas-kd-mps-"))
    dirs = {PIPE_ENV: str(root / "pipe"), LOG_ENV: str(root / "log")}
    for d in dirs.values():
        Path(d).mkdir()
    env = {**os.environ, **dirs}
    started = False
    saved = {k: os.environ.get(k) for k in dirs}
    try:
        why = None
        try:
            done = _control(control, env, daemon=True)
            started = done.returncode == 0
            if not started:
                why = f"{CONTROL} -d failed ({_why(done)})"
            else:
                probe = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=PROBE_SECONDS, check=False)
                if probe.returncode != 0:
                    why = f"a CUDA process could not start through it ({_why(probe)})"
                elif not (servers := _control(control, env, "get_server_list").stdout.split()):
                    why = "a CUDA process started, but not through an MPS server (the daemon lists none)"
        except (OSError, subprocess.TimeoutExpired) as e:
            why = f"{type(e).__name__}: {e}"
        if why is not None:
            log(f"mps: not used: {why}; the trial processes time-share the device")
            yield None
            return
        os.environ.update(dirs)
        log(f"mps: the trial processes share the device through MPS server {' '.join(servers)} (pipes in {dirs[PIPE_ENV]})")
        yield dirs[PIPE_ENV]
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        quit_answered = not started
        if started:
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                _control(control, env, "quit", timeout=QUIT_SECONDS)
                quit_answered = True
        if quit_answered:  # else the daemon still reads its pipes there: left to it in the temp folder
            shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def device_sharing(mps: bool, processes: int, device: str | None, log: Callable[[str], None], what: str = "search") -> Iterator[None]:
    """`mps_server` where the ``mps`` switch asks for it and it can act: ``processes`` (a search's
    --jobs, a retrain's runs at once) above one, on a GPU (``device`` not "cpu", and one visible:
    `nas_kd.device.cuda_present`, which does not initialise CUDA). Enter it before this process
    initialises CUDA."""
    if not mps:
        yield
        return
    from nas_kd.device import cuda_present

    if processes < 2 or device == "cpu" or not cuda_present():
        log(f"{what}: mps=1 acts where several processes share a GPU ({f'--jobs {processes}' if processes < 2 else 'no GPU here'}): not started")
        yield
        return
    with mps_server(log):
        yield
