"""`nas-kd search --jobs N`: N trial processes on one machine, one teacher, one study.

Real `python -m nas_kd search` processes on tiny synthetic data, as in test_workers.py."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from nas_kd.jobs import GPU_JOBS, default_jobs, threads_per_job
from tests.child_process import ctrl_c_reaches_it
from tests.test_workers import SPACE as TINY
from tests.test_workers import TEACHER, _assert_no_config_twice, _cmd, _counted, _created, _env, _trials

INTERRUPTED = "interrupted (Ctrl-C)"


def _started_workers(text: str) -> list[int]:
    return [int(pid) for pid in re.findall(r"search: worker \d+ started \(pid (\d+)\)", text)]


def _gone(pid: int) -> bool:
    """Exited: no such process, or a zombie nobody has reaped yet (it runs nothing)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state == "Z"


def _wait_for_training(storage: str, study: str, count: int, log: Path, timeout: float = 300) -> None:
    """Until ``count`` trials train at the same moment (so every process holds one)."""
    from optuna.trial import TrialState

    deadline = time.time() + timeout
    while time.time() < deadline:
        time.sleep(0.3)
        if not _created(log.parent, study):
            continue
        try:
            if sum(t.state == TrialState.RUNNING and bool(t.user_attrs.get("feasible")) for t in _trials(storage, study)) >= count:
                return
        except Exception:  # a read that met a write
            continue
    raise AssertionError(f"{count} trials never trained at once; log:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def teacher_path(tmp_path_factory):
    from nas_kd.models.teachers import ensure_teacher

    root = tmp_path_factory.mktemp("jobs")
    _, _, path = ensure_teacher("synthetic", "resnet8", TEACHER, preset="test", device=torch.device("cpu"), root=root / "teachers", log=lambda *_: None)
    return path


def test_default_jobs_follow_the_device():
    assert default_jobs(torch.device("cpu")) == 1
    assert 1 <= default_jobs(torch.device("cuda")) <= GPU_JOBS
    import nas_kd.jobs

    for cores, expected in ((16, GPU_JOBS), (2, 2), (1, 1)):  # one process per core at most: each launches on its own
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(nas_kd.jobs, "_cores", lambda cores=cores: cores)
            assert default_jobs(torch.device("cuda")) == expected
    cores = len(os.sched_getaffinity(0))
    assert threads_per_job(1) == min(torch.get_num_threads(), cores)
    assert threads_per_job(cores * 2) == 1


def test_two_jobs_train_exactly_the_trials_from_one_teacher_training(tmp_path):
    """The parent trains the registry teacher once; the child loads that file; 3 trials, none twice."""
    (tmp_path / "tiny.yaml").write_text(TINY)
    study = "jobs-two"
    cmd = _cmd(Path("resnet8"), study, 3, extra=["--jobs", "2", "--no-finalize"])
    r = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    teachers = list((tmp_path / "runs" / "teachers").glob("*.pt"))
    assert len(teachers) == 1, teachers
    assert out.count("teacher: training resnet8") == 1, out
    assert f"teacher: worker 1 loads runs/teachers/{teachers[0].name}" in out, out
    # ... and the teacher's outputs were filled once, by the parent, and opened by the child.
    shared = f"runs/{study}/teacher-cache.pt"
    assert f"shared with the trial processes through {shared}" in out, out
    assert f"search: the teacher's outputs opened from {shared}, not computed again [worker 1]" in out, out
    assert "not usable here" not in out and not (tmp_path / shared).exists()
    assert len(_started_workers(out)) == 1 and "exited with code" not in out
    trials = _trials(f"sqlite:///{tmp_path}/runs/{study}/study.db", study)
    assert len(_counted(trials)) == 3 and len(trials) == 3, [(t.number, t.state) for t in trials]
    _assert_no_config_twice(trials)



def _start(tmp_path: Path, teacher: Path, study: str):
    """A --jobs 2 search of many trials, its output (parent's and child's) in log.txt."""
    (tmp_path / "tiny.yaml").write_text(TINY)
    cmd = _cmd(teacher, study, 50, extra=["--jobs", "2"])
    log = tmp_path / "log.txt"
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=_env(), text=True, stdout=out, stderr=subprocess.STDOUT, preexec_fn=ctrl_c_reaches_it)
    return proc, f"sqlite:///{tmp_path}/runs/{study}/study.db", log


def test_ctrl_c_stops_every_worker_and_leaves_a_partial_report(tmp_path, teacher_path):
    from optuna.trial import TrialState

    study = "jobs-sigint"
    proc, storage, log = _start(tmp_path, teacher_path, study)
    _wait_for_training(storage, study, 2, log)
    proc.send_signal(signal.SIGINT)  # to the parent only, as `kill -INT` would; it forwards it
    proc.wait(120)
    out = log.read_text()
    assert proc.returncode == 130, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    (child,) = _started_workers(out)
    assert _gone(child)
    trials = _trials(storage, study)
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    stopped = [t for t in trials if t.user_attrs.get("fail_reason") == INTERRUPTED]
    states = [(t.number, t.state, t.user_attrs.get("fail_reason")) for t in trials]
    # Both workers held a trial when the signal was sent; one may have finished it in the
    # milliseconds between (a race seen once in a full suite): it is COMPLETE, every other trial
    # was interrupted, and both processes are gone (above).
    assert 1 <= len(stopped) <= 2 and all(t.state == TrialState.FAIL for t in stopped), states
    assert all(t.state == TrialState.COMPLETE or t.number in {s.number for s in stopped} for t in trials), states
    report = (tmp_path / "runs" / study / "report.md").read_text()
    assert "partial" in report.lower()


def test_a_worker_whose_parent_was_killed_stops_by_itself(tmp_path, teacher_path):
    from optuna.trial import TrialState

    study = "jobs-orphan"
    proc, storage, log = _start(tmp_path, teacher_path, study)
    _wait_for_training(storage, study, 2, log)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    (child,) = _started_workers(log.read_text())
    deadline = time.time() + 60
    while not _gone(child) and time.time() < deadline:
        time.sleep(0.3)
    assert _gone(child), log.read_text()[-3000:]
    # The child recorded its own trial as interrupted; the parent's, killed, stays RUNNING until
    # a later worker's heartbeat check fails and retries it (test_workers.py), or is COMPLETE if it
    # finished in the instant between the check above and the kill (a race seen once in a loop).
    trials = _trials(storage, study)
    seen = ([(t.number, t.state.name, t.user_attrs.get("fail_reason")) for t in trials], log.read_text()[-3000:])
    assert len([t for t in trials if t.user_attrs.get("fail_reason") == INTERRUPTED and t.state == TrialState.FAIL]) == 1, seen
    assert len([t for t in trials if t.state == TrialState.RUNNING]) <= 1, seen
    assert all(t.state in (TrialState.COMPLETE, TrialState.RUNNING) or t.user_attrs.get("fail_reason") == INTERRUPTED for t in trials), seen


# A child whose first KeyboardInterrupt is lost, as when it lands in a garbage collector's finalizer
# (SQLAlchemy's weakref callbacks print "Exception ignored" and drop it): the CI failure this fixes.
_LOSES_FIRST_INTERRUPT = """
import signal, sys, time
from nas_kd.jobs import _interrupt_unless_stopping, _watch_parent
signal.signal(signal.SIGINT, _interrupt_unless_stopping)
try:
    # "ready" inside the try: the parent interrupts as soon as it reads it, and on a loaded machine
    # the first SIGINT could land before the try began (an unhandled KeyboardInterrupt, exit -2).
    print("ready", flush=True)
    if len(sys.argv) > 1:
        _watch_parent(int(sys.argv[1]))  # not this process's parent: the watch fires at once
    time.sleep(30)
except KeyboardInterrupt:
    pass  # lost
try:
    time.sleep(30)
except KeyboardInterrupt:
    try:
        time.sleep(3)  # recording the trial (longer than RESEND_SECONDS): a repeated SIGINT must not interrupt this
    finally:
        print("stopped", flush=True)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # as nas_kd.jobs.main does once stopped
    sys.exit(7)
"""


def _child(*args: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", _LOSES_FIRST_INTERRUPT, *args], stdout=subprocess.PIPE, text=True, env=_env(), preexec_fn=ctrl_c_reaches_it)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_an_orphaned_child_whose_first_interrupt_is_lost_still_stops():
    start = time.monotonic()
    proc = _child(str(os.getpid() + 1_000_000))
    out, _ = proc.communicate(timeout=25)
    assert proc.returncode == 7 and out.strip() == "stopped" and time.monotonic() - start < 15


def test_stop_repeats_the_interrupt_until_the_child_has_recorded_its_trial():
    from nas_kd.jobs import STOP_SECONDS, LocalWorkers

    workers = LocalWorkers(plan=None, log=lambda _: None)
    proc = _child()
    workers.procs.append((1, proc))
    start = time.monotonic()
    workers.stop()
    assert proc.returncode == 7, "killed instead of stopped"  # SIGKILL would give -9
    assert proc.stdout.read().strip() == "stopped" and time.monotonic() - start < STOP_SECONDS / 4


def test_final_retrain_in_two_processes_matches_one(in_tmp, teacher_path):
    """The retrain's runs are seeded alone: two worker processes give the very same figures and weights."""
    import shutil

    from nas_kd.finalize import FINAL_DIR, finalize
    from nas_kd.search import SearchOptions, run_search

    (in_tmp / "tiny.yaml").write_text(TINY)
    opts = SearchOptions(dataset="synthetic", teacher=str(teacher_path), space="tiny.yaml", budget="130k", trials=2, retrain_seeds=2, baselines=False, mode="kd", study="fin", preset="quick", device="cpu", progress=False)
    run_search(opts, log=lambda _: None, finish=False)
    final = in_tmp / "runs" / "fin" / FINAL_DIR

    def figures(result: dict) -> list:
        return [(r["seed"], r["val_accuracy"], r["test_accuracy"]) for r in result["winner"]["runs"]]

    one = finalize("fin", jobs=1, log=lambda _: None)
    weights = torch.load(final / "winner.pt")
    shutil.rmtree(final)
    lines: list[str] = []
    two = finalize("fin", jobs=2, log=lines.append)
    assert "finalize: 2 runs, 2 at once (--jobs)" in lines
    # The parent filled the teacher's outputs once; both workers opened them (and the file is gone).
    assert "finalize: teacher outputs of 2 run(s) opened from the parent's cache, 0 filled by their worker" in lines, lines
    assert not (final / "teacher-cache.pt").exists()
    assert figures(two) == figures(one) and len(figures(one)) == 2
    again = torch.load(final / "winner.pt")
    assert weights.keys() == again.keys() and all(torch.equal(weights[k], again[k]) for k in weights)
    # Each worker's run was kept as it finished: without the final report, nothing trains again.
    assert len(list((final / "runs").glob("*.pt"))) == 2
    (final / "final.json").unlink()
    lines.clear()
    resumed = finalize("fin", jobs=2, log=lines.append)
    assert not any("at once (--jobs)" in line for line in lines) and any("2 of 2 runs kept" in line for line in lines), lines
    assert figures(resumed) == figures(one)


def test_the_rescreen_runs_in_worker_processes_and_scores_as_one(in_tmp, teacher_path):
    """With --jobs 2 the re-screen's full-schedule runs train two at a time in worker processes
    (they used to train one after another in the search's process, whatever --jobs said), opening
    the parent's teacher outputs, and score exactly as one process does; each score is recorded."""
    from nas_kd.finalize import finalize
    from nas_kd.plan import plan_of
    from nas_kd.rescreen import RescreenKey, scores
    from nas_kd.search import SearchOptions, run_search
    from nas_kd.study import load_study

    (in_tmp / "tiny.yaml").write_text(TINY)
    found = {}
    for study, jobs in (("screen1", 1), ("screen2", 2)):
        opts = SearchOptions(dataset="synthetic", teacher=str(teacher_path), space="tiny.yaml", budget="130k", trials=3, retrain_seeds=1, baselines=False, rescreen=3, mode="kd", study=study, preset="quick", device="cpu", progress=False)
        run_search(opts, log=lambda _: None, finish=False)
        lines: list[str] = []
        finalize(study, jobs=jobs, log=lines.append)
        st = load_study(study, f"sqlite:///runs/{study}/study.db")
        found[jobs] = scores(st, RescreenKey.of(plan_of(st)))
        assert ("finalize: re-screen of 3 candidates, 2 at once (--jobs)" in lines) == (jobs == 2), lines
        assert sum(line.startswith("rescreen ") for line in lines) == 3
        assert not (in_tmp / "runs" / study / "final" / "teacher-cache.pt").exists()
    assert len(found[2]) == 3 and found[2] == found[1]


@pytest.mark.parametrize(("brief", "fills"), [(None, 1), ("train_subset=1000", 2)])
def test_the_retrain_reuses_the_search_teacher_cache_when_both_schedules_read_the_same_data(in_tmp, teacher_path, monkeypatch, brief, fills):
    """Synthetic data is smaller than both quick subsets, so brief and full train on the same
    examples without crops: one teacher fill serves the search and the retrain; a brief run on
    fewer examples needs a second."""
    from nas_kd.distill.cache import TeacherCache
    from nas_kd.search import SearchOptions, run_search

    real_fill, calls = TeacherCache._fill, []

    def counted(self, *a, **k):
        calls.append(self.num_examples)
        return real_fill(self, *a, **k)

    monkeypatch.setattr(TeacherCache, "_fill", counted)
    (in_tmp / "tiny.yaml").write_text(TINY)
    opts = SearchOptions(dataset="synthetic", teacher=str(teacher_path), space="tiny.yaml", budget="130k", trials=2, retrain_seeds=1, baselines=False, rescreen=0, mode="kd", study="reuse", preset="quick", device="cpu", progress=False, brief=brief)
    result = run_search(opts, log=lambda _: None)
    assert result["report"] is not None and len(calls) == fills, calls


def test_map_processes_keeps_the_items_order_and_reports_each_result_as_it_finishes():
    """The retrain keeps each run as `on_result` sees it: a run that finished while an earlier,
    longer one still trained must be seen then, not after it (a Ctrl-C would lose it)."""
    from nas_kd.jobs import map_processes
    from tests.child_process import echo_after

    seen = []
    assert map_processes(echo_after, [1.5, 0.0], 2, on_result=lambda item, result: seen.append((item, result))) == [1.5, 0.0]
    assert seen == [(0.0, 0.0), (1.5, 1.5)]


def test_a_finalize_stopped_by_ctrl_c_keeps_its_finished_runs_and_trains_only_the_rest(in_tmp, teacher_path, monkeypatch):
    """`nas-kd finalize --jobs 2`, interrupted once its first run is kept: it exits 130 with no
    traceback, and the next finalize trains only the runs that were not kept."""
    import nas_kd.distill
    from nas_kd.finalize import FINAL_DIR, RUNS_DIR, finalize
    from nas_kd.search import SearchOptions, run_search

    (in_tmp / "tiny.yaml").write_text(TINY)
    opts = SearchOptions(dataset="synthetic", teacher=str(teacher_path), space="tiny.yaml", budget="130k", trials=2, retrain_seeds=6, baselines=False, rescreen=0, mode="kd", study="stopped", preset="quick", device="cpu", progress=False)
    run_search(opts, log=lambda _: None, finish=False)
    kept = in_tmp / "runs" / "stopped" / FINAL_DIR / RUNS_DIR
    log = in_tmp / "finalize.txt"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "nas_kd", "finalize", "--study", "stopped", "--jobs", "2", "--no-progress"], cwd=in_tmp, env=_env(), text=True, stdout=out, stderr=subprocess.STDOUT, preexec_fn=ctrl_c_reaches_it)
    deadline = time.time() + 300
    while not list(kept.glob("*.pt")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    proc.wait(120)
    text = log.read_text()
    assert proc.returncode == 130 and "Traceback" not in text, text[-3000:]
    done = len(list(kept.glob("*.pt")))
    assert 1 <= done < 6 and not (in_tmp / "runs" / "stopped" / FINAL_DIR / "final.json").exists(), text[-3000:]
    real, trained = nas_kd.distill.train, []
    monkeypatch.setattr(nas_kd.distill, "train", lambda *a, **k: trained.append(k["seed"]) or real(*a, **k))
    final = finalize("stopped", jobs=1, log=lambda _: None)
    assert len(trained) == 6 - done and len(final["winner"]["runs"]) == 6


def test_a_child_that_crashes_is_said_and_one_that_ignores_ctrl_c_is_killed(monkeypatch):
    """The parent's handle on its trial processes: a child that exits badly is reported (its
    trial is retried by the heartbeat check), and at a stop a child that does not leave after its
    SIGINTs (stuck in a CUDA call, say) is killed rather than waited on for ever."""
    import nas_kd.jobs as jobs
    from nas_kd.jobs import LocalWorkers

    said = []
    workers = LocalWorkers(plan=None, log=said.append)
    crashed = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    crashed.wait()
    workers.procs.append((1, crashed))
    workers.poll()
    assert said == [f"search: worker 1 (pid {crashed.pid}) exited with code 3; its trial, if any, is retried"] and workers.procs == []
    stubborn = subprocess.Popen([sys.executable, "-c", "import signal, sys, time; signal.signal(signal.SIGINT, signal.SIG_IGN); print(flush=True); time.sleep(60)"], stdout=subprocess.PIPE)
    stubborn.stdout.readline()  # its handler is in place
    workers.procs.append((2, stubborn))
    monkeypatch.setattr(jobs, "STOP_SECONDS", 1.0)
    t0 = time.monotonic()
    workers.stop()
    assert stubborn.returncode == -signal.SIGKILL and time.monotonic() - t0 < 10 and workers.procs == []


def test_a_pool_worker_leaves_ctrl_c_to_the_parent():
    """The parent alone answers Ctrl-C (it terminates the pool and raises once); each worker
    ignores it, so an interrupted parallel finalize prints no traceback per worker."""
    from nas_kd.jobs import _pool_worker

    handler, threads = signal.getsignal(signal.SIGINT), torch.get_num_threads()
    try:
        _pool_worker(threads + 1)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN and torch.get_num_threads() == threads + 1
    finally:
        signal.signal(signal.SIGINT, handler)
        torch.set_num_threads(threads)
