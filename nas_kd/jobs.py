"""Several trial processes of one study on one machine: `nas-kd search --jobs N`.

A tiny student cannot keep a GPU busy: its step is mostly kernel launches and host work. N
processes, each launching its own trials' kernels, share the device instead. The parent
`nas_kd.search.run_search` resolves the teacher (training it if it is missing: once, never per
process), opens the study and binds the teacher's file and SHA-256 into the plan; `LocalWorkers`
then starts N-1 children with ``python -m nas_kd.jobs``, each reading that bound plan as JSON on
its stdin. A child loads exactly that checkpoint (refused if its hash changed), joins the study and
claims trials through the same loop as any other worker (`nas_kd.workers.run_trials`: claims under
the study lock, heartbeats, parameters drawn under the lock, so no config is trained twice). It
never finalises: the parent waits for the children and then finalises alone.

Stopping. Children run in a session of their own, so a terminal's Ctrl-C reaches the parent only;
the parent forwards SIGINT to each, waits up to `STOP_SECONDS`, and kills any child still alive. A
child whose parent died without forwarding (SIGKILL) notices within a second (`_watch_parent`) and
interrupts itself the same way, so no worker outlives its search.

One SIGINT is not always enough: a KeyboardInterrupt raised while the interpreter runs a garbage
collector's finalizer (SQLAlchemy has weakref callbacks) cannot propagate. `nas_kd.interrupts`
re-arms it silently (it used to be printed as "Exception ignored" and lost, and the child trained
on); as a second guard, SIGINT is repeated every `RESEND_SECONDS` until the child
is gone, and the child's handler (`_interrupt_unless_stopping`) raises only when no
KeyboardInterrupt is already being handled: a repeat never breaks the recording of the
interrupted trial.

Threads. On a CPU the N processes split the cores (`threads_per_job`); on a GPU too, since each
process needs little more than one core to launch kernels.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch

__all__ = ["default_jobs", "threads_per_job", "LocalWorkers", "map_processes", "GPU_JOBS", "STOP_SECONDS", "main"]

# Trial processes per GPU by default: each needs a CPU core to launch kernels, and four tiny
# students' launch streams are what one device can interleave (docs/BENCHMARKS.md, gpu-jobs, has
# the measured 1-vs-4 figure once a GPU run wrote it).
GPU_JOBS = 4
STOP_SECONDS = 60.0  # how long an interrupted child may take to record its trial and exit
RESEND_SECONDS = 2.0  # SIGINT again while an interrupted child lives (the first can be lost)


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_jobs(device: torch.device) -> int:
    """1 on a CPU (one process already uses every core); on a GPU `GPU_JOBS`, at most one per core."""
    return min(GPU_JOBS, _cores()) if device.type == "cuda" else 1


def threads_per_job(jobs: int) -> int:
    """Intra-op threads for each of ``jobs`` processes: the cores divided, never more than torch
    would use anyway (OMP_NUM_THREADS=1 stays 1)."""
    return max(1, min(torch.get_num_threads(), _cores() // max(1, jobs)))


class LocalWorkers:
    """The parent's handle on its child trial processes (see the module docstring)."""

    def __init__(self, plan, log: Callable[[str], None]):
        self.plan, self.log = plan, log
        self.procs: list[tuple[int, subprocess.Popen]] = []

    def start(self, count: int, threads: int, teacher_cache: Path | None = None) -> None:
        """Start ``count`` children numbered 1..count, each with ``threads`` torch threads and
        (``teacher_cache``) the file of the parent's filled teacher cache to open."""
        payload = json.dumps(self.plan.to_dict())
        for index in range(1, count + 1):
            cmd = [sys.executable, "-m", "nas_kd.jobs", "--worker", str(index), "--threads", str(threads), "--parent", str(os.getpid())]
            if teacher_cache is not None:
                cmd += ["--teacher-cache", str(teacher_cache)]
            # Own session: a terminal's Ctrl-C goes to the parent alone, which forwards it once.
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, text=True, start_new_session=True)
            proc.stdin.write(payload)
            proc.stdin.close()
            self.procs.append((index, proc))
            self.log(f"search: worker {index} started (pid {proc.pid})")

    def poll(self) -> None:
        """Report children that ended badly (a crash, a refused teacher); their trials, if any,
        are failed and retried by the heartbeat check, so the search goes on."""
        for index, proc in list(self.procs):
            code = proc.poll()
            if code is not None:
                self.procs.remove((index, proc))
                if code != 0:
                    self.log(f"search: worker {index} (pid {proc.pid}) exited with code {code}; its trial, if any, is retried")

    def wait(self) -> None:
        """Wait for every child to finish its last trial and leave (the study has its trials)."""
        for _, proc in self.procs:
            proc.wait()
        self.poll()

    def stop(self) -> None:
        """Interrupt every child (repeatedly, see the module docstring), wait for them to record
        their trials, kill stragglers."""
        alive = [(i, p) for i, p in self.procs if p.poll() is None]
        deadline = time.monotonic() + STOP_SECONDS
        try:
            while alive and time.monotonic() < deadline:
                for _, proc in alive:
                    proc.send_signal(signal.SIGINT)
                until = min(deadline, time.monotonic() + RESEND_SECONDS)
                while time.monotonic() < until and any(p.poll() is None for _, p in alive):
                    time.sleep(0.05)
                alive = [(i, p) for i, p in alive if p.poll() is None]
            for _, proc in alive:
                proc.kill()
                proc.wait()
        except KeyboardInterrupt:  # a second Ctrl-C: do not wait any longer
            for _, proc in self.procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            raise
        self.procs = []

    def __enter__(self) -> LocalWorkers:
        return self

    def __exit__(self, *exc) -> None:
        if any(p.poll() is None for _, p in self.procs):
            self.stop()


def _pool_worker(threads: int) -> None:
    # The parent alone answers Ctrl-C (it terminates the pool): a worker interrupted mid-run
    # would only add a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(threads)


def _call_indexed(task: tuple[Callable, int, object]) -> tuple[int, object]:
    fn, index, item = task
    return index, fn(item)


def map_processes(fn: Callable, items: list, jobs: int, on_result: Callable | None = None) -> list:
    """``[fn(x) for x in items]``, up to ``jobs`` of them at once in spawned processes (``fn`` and
    the items must pickle; spawn, because CUDA cannot run in a forked child). Results keep the
    items' order; ``on_result(item, result)`` sees each as soon as it is done, in the order they
    finish (a caller keeping each result then loses none to a Ctrl-C while a longer one runs).
    An exception in a run, or Ctrl-C, terminates the other workers and is raised here."""
    import multiprocessing

    count = min(jobs, len(items))
    pool = multiprocessing.get_context("spawn").Pool(count, initializer=_pool_worker, initargs=(threads_per_job(count),))
    out: list = [None] * len(items)
    try:
        for index, result in pool.imap_unordered(_call_indexed, [(fn, i, item) for i, item in enumerate(items)], chunksize=1):
            out[index] = result
            if on_result is not None:
                on_result(items[index], result)
    except BaseException:
        pool.terminate()
        pool.join()
        raise
    pool.close()
    pool.join()
    return out


def _interrupt_unless_stopping(signum, frame) -> None:
    """A child's SIGINT handler: KeyboardInterrupt, unless one is already being handled (the
    trial it stopped is being recorded: a repeated SIGINT must not break that)."""
    if isinstance(sys.exc_info()[1], KeyboardInterrupt):
        return
    raise KeyboardInterrupt


def _watch_parent(parent: int) -> None:
    """Interrupt this process (as a Ctrl-C would, repeatedly: see the module docstring) once
    ``parent`` is gone."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        while True:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(RESEND_SECONDS)

    threading.Thread(target=watch, name="nas-kd-parent-watch", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    """A child: the plan on stdin; trials until the study has them; exit 0, 130 (interrupted) or 2."""
    from nas_kd.errors import EXIT_USAGE, UserError
    from nas_kd.interrupts import keep_lost_interrupts

    ap = argparse.ArgumentParser(description="one trial process of `nas-kd search --jobs N` (started by the search, not by hand)")
    ap.add_argument("--worker", type=int, required=True)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--parent", type=int, required=True)
    ap.add_argument("--teacher-cache", type=Path, default=None, help="the parent's filled teacher cache (nas_kd.distill.shared_cache)")
    args = ap.parse_args(argv)
    # As in nas_kd.cli: an interrupt inside a database call is reported once, not as a pool traceback.
    logging.getLogger("sqlalchemy.pool").setLevel(logging.CRITICAL)
    # A child is stopped by SIGINT alone (forwarded by the parent, or sent by the watch below), so
    # it must raise KeyboardInterrupt even when started from a shell job that ignores SIGINT
    # (`nohup nas-kd search --jobs 2 &`): an ignored disposition survives exec.
    signal.signal(signal.SIGINT, _interrupt_unless_stopping)
    keep_lost_interrupts()  # one that lands in a finalizer is re-armed, not printed
    _watch_parent(args.parent)
    torch.set_num_threads(args.threads)

    def log(text: str) -> None:
        print(text, flush=True)

    try:
        from nas_kd.plan import SearchPlan
        from nas_kd.search import run_worker

        run_worker(SearchPlan.from_dict(json.loads(sys.stdin.read())), worker=args.worker, log=log, teacher_cache=args.teacher_cache)
    except UserError as e:
        print(f"nas-kd: error: worker {args.worker}: {e}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # stopped: repeats must not interrupt the exit
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
