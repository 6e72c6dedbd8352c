"""Many workers on one study: a real PostgreSQL server, SIGKILL, SIGINT, SQLite kill-and-resume.

Workers are real `python -m nas_kd search` processes on tiny synthetic data.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from nas_kd.config import Schedule
from tests.child_process import ctrl_c_reaches_it
from tests.postgres_server import postgres_bin, postgres_server
from tests.test_cli_search import TINY_SPACE as SPACE  # the same tiny space as the CLI search test

needs_pg = pytest.mark.skipif(postgres_bin() is None and not os.environ.get("CI"), reason="PostgreSQL is not installed (.ci/run installs it)")

TEACHER = Schedule(epochs=1, batch_size=64, lr=0.05, warmup_epochs=0.0, train_subset=512)
HEARTBEAT = 1  # seconds; the grace period is 3 heartbeats


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    from nas_kd.models.teachers import ensure_teacher

    root = tmp_path_factory.mktemp("workers")
    (root / "tiny.yaml").write_text(SPACE)
    _, _, path = ensure_teacher("synthetic", "resnet8", TEACHER, preset="test", device=torch.device("cpu"), root=root / "runs" / "teachers", log=lambda *_: None)
    return root, path



def _cmd(teacher: Path, study: str, trials: int, storage: str | None = None, extra=()):
    cmd = [sys.executable, "-m", "nas_kd", "search", "--dataset", "synthetic", "--teacher", str(teacher), "--space", "tiny.yaml",
           "--budget", "130k", "--trials", str(trials), "--retrain-seeds", "1", "--no-baselines", "--mode", "kd", "--study", study,
           "--preset", "quick", "--device", "cpu", "--heartbeat", str(HEARTBEAT), "--no-progress", *extra]
    if storage:
        cmd += ["--storage", storage]
    return cmd


def _env():
    # One thread per worker: three workers share two cores.
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _trials(storage: str, study: str):
    import optuna

    return optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)


def _created(root: Path, study: str) -> bool:
    """The search has created its study (config.json is written right after). Opening a SQLite
    file with Optuna before that races the search's own schema creation (which holds nas-kd's
    file lock; a bare load_study does not): the search then exits with 'cannot open storage'."""
    return (root / "runs" / study / "config.json").exists()


def _counted(trials):
    from nas_kd.study import finished_trials

    return finished_trials(trials)


def _assert_no_config_twice(trials, retried=()) -> None:
    """Workers started together drew the same configs before proposals were made under the lock;
    only a dead worker's trial may be trained again (its retry)."""
    from collections import Counter

    configs = Counter(t.user_attrs.get("config") for t in trials if t.number not in retried and t.user_attrs.get("config"))
    assert max(configs.values()) == 1, [c for c, n in configs.items() if n > 1]


def _wait_for_running(storage: str, study: str, timeout: float = 120) -> None:
    import optuna
    from optuna.trial import TrialState

    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if any(t.state == TrialState.RUNNING and t.user_attrs.get("feasible") for t in _trials(storage, study)):
                return
        except (KeyError, optuna.exceptions.StorageInternalError):
            pass
        time.sleep(0.3)
    raise AssertionError("no trial started training in time")


@needs_pg
def test_three_workers_on_postgres_survive_a_sigkill(workdir):
    from optuna.trial import TrialState

    root, teacher = workdir
    study = "pg-workers"
    with postgres_server() as url:
        # A first worker starts; it is killed with SIGKILL in the middle of a training trial.
        victim = subprocess.Popen(_cmd(teacher, study, 12, url), cwd=root, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        _wait_for_running(url, study)
        victim.send_signal(signal.SIGKILL)
        victim.wait(30)
        killed = [t.number for t in _trials(url, study) if t.state == TrialState.RUNNING]
        assert killed, "the kill left no RUNNING trial to recover"

        workers = [subprocess.Popen(_cmd(teacher, study, 12, url), cwd=root, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(3)]
        outputs = []
        for w in workers:
            out, _ = w.communicate(timeout=600)
            outputs.append(out)
            assert w.returncode == 0, out[-3000:]

        trials = _trials(url, study)
        numbers = [t.number for t in trials]
        assert len(numbers) == len(set(numbers))
        assert len(_counted(trials)) == 12, [(t.number, t.state, t.user_attrs.get("fail_reason")) for t in trials]
        assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
        # The killed trial was failed by a heartbeat check and its parameters retried.
        for n in killed:
            assert trials[n].state == TrialState.FAIL
            assert any(t.system_attrs.get("failed_trial") == n and t.state != TrialState.FAIL for t in trials)
        # Every worker ran trials; exactly one of them finalised.
        per_worker = [sum(line.startswith("trial ") for line in out.splitlines()) for out in outputs]
        assert all(n > 0 for n in per_worker), per_worker
        assert sum("search: finalizing" in out for out in outputs) == 1, [o[-800:] for o in outputs]
        report = json.loads((root / "runs" / study / "report.json").read_text())
        assert report["trial_counts"]["finished"] == 12 and not report["partial"]
        # The retried trial inherits the dead one's constraints: no warning about setting them again.
        assert not [o for o in outputs if "constraint value is ignored" in o]


def test_sqlite_sigkill_then_same_command_resumes_without_losing_trials(workdir):
    from optuna.trial import TrialState

    root, teacher = workdir
    study = "sqlite-kill"
    storage = f"sqlite:///{root}/runs/{study}/study.db"
    cmd = _cmd(teacher, study, 6)
    proc = subprocess.Popen(cmd, cwd=root, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 180
    while time.time() < deadline:  # let at least two trials finish, then kill during the next
        time.sleep(0.5)
        if not _created(root, study):
            continue
        try:
            trials = _trials(storage, study)
        except Exception:
            continue
        if len(_counted(trials)) >= 2 and any(t.state == TrialState.RUNNING for t in trials):
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    before = {t.number: (t.state, t.values) for t in _counted(_trials(storage, study))}
    assert len(before) >= 2

    time.sleep(3 * HEARTBEAT + 1)  # past the grace period: the killed trial is stale
    again = subprocess.run(cmd, cwd=root, env=_env(), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    trials = _trials(storage, study)
    assert len(_counted(trials)) == 6
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    after = {t.number: (t.state, t.values) for t in trials}
    for number, state_values in before.items():
        assert after[number] == state_values  # no finished trial lost or changed


def test_sigint_marks_the_trial_writes_a_partial_report_and_exits_130(workdir):
    from optuna.trial import TrialState

    root, teacher = workdir
    study = "sigint"
    storage = f"sqlite:///{root}/runs/{study}/study.db"
    proc = subprocess.Popen(_cmd(teacher, study, 50), cwd=root, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=ctrl_c_reaches_it)
    deadline = time.time() + 180
    while time.time() < deadline:
        time.sleep(0.3)
        if not _created(root, study):
            continue
        try:
            if any(t.state == TrialState.RUNNING and t.user_attrs.get("feasible") for t in _trials(storage, study)):
                break
        except Exception:
            continue
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out[-2000:]
    assert "Traceback" not in out, out[-3000:]
    trials = _trials(storage, study)
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert (root / "runs" / study / "report.md").exists()
    assert "partial" in (root / "runs" / study / "report.md").read_text().lower()


def test_two_processes_on_one_sqlite_study_share_it(workdir):
    root, teacher = workdir
    study = "sqlite-two"
    storage = f"sqlite:///{root}/runs/{study}/study.db"
    (root / "runs" / study).mkdir(parents=True, exist_ok=True)
    procs = [subprocess.Popen(_cmd(teacher, study, 6, storage), cwd=root, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    for p, out in zip(procs, outs, strict=True):
        assert p.returncode == 0, out[-3000:]
    trials = _trials(storage, study)
    assert len(_counted(trials)) == 6
    _assert_no_config_twice(trials)
    assert sum("search: finalizing" in out for out in outs) == 1


def _fresh_study(tmp_path, heartbeat: int | None = HEARTBEAT):
    import optuna

    from nas_kd.storage import open_storage

    url = f"sqlite:///{tmp_path}/study.db"
    storage = open_storage(url, heartbeat_interval=heartbeat)
    return optuna.create_study(study_name="orphans", storage=storage), url


def test_a_claimed_trial_has_its_heartbeat_before_the_lock_is_released(tmp_path):
    """A worker killed while preparing its trial (before Optuna's heartbeat thread starts) must
    leave a trial that the stale check can fail: Optuna skips trials with no heartbeat at all,
    and the resumed search in CI waited for such a trial forever."""
    from nas_kd.workers import _claim

    study, url = _fresh_study(tmp_path)
    rdb = study._storage._backend
    seen = []
    trial = _claim(study, url, target=3, prepare=lambda t: seen.append(time.sleep(3 * HEARTBEAT + 1) or rdb._get_stale_trial_ids(study._study_id)))
    assert seen == [[trial._trial_id]], "a trial whose worker died before its first heartbeat would never be failed"


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used")
def test_the_claim_counts_to_the_target_and_takes_a_waiting_retry_at_the_tail(tmp_path):
    """The claim's three answers: a trial while fewer than ``target`` are finished or under way;
    "wait" while the last ones run elsewhere; None once ``target`` are finished. A WAITING trial
    (a dead worker's retry, or the queued baseline) is run even at the tail, where finished plus
    live trials already reach the target: otherwise every worker would wait on it for ever."""
    from optuna.trial import TrialState

    from nas_kd.workers import _claim

    study, url = _fresh_study(tmp_path)
    study.tell(study.ask(), 1.0)
    running = _claim(study, url, target=3)
    assert running.number == 1
    study.enqueue_trial({}, skip_if_exists=False)  # a retry: done 1 + live 2 = target
    retry = _claim(study, url, target=3)
    assert retry != "wait" and retry.number == 2
    assert _claim(study, url, target=3) == "wait"  # two run elsewhere: none to start
    for t in (running, retry):
        study.tell(t, 1.0)
    assert _claim(study, url, target=3) is None
    assert [t.state for t in study.get_trials()] == [TrialState.COMPLETE] * 3


def test_run_trials_stops_at_its_timeout_and_when_told_to(tmp_path):
    """`--timeout`: no trial starts once it has passed (the trial under way finishes); and the
    search's stop check (a Ctrl-C'd sibling, a budget's end) ends the loop before the next claim."""
    from nas_kd.workers import run_trials

    study, url = _fresh_study(tmp_path, heartbeat=None)

    def slow(trial):
        time.sleep(1.0)
        return 1.0

    assert run_trials(study, slow, url=url, target=50, timeout=1.5) == 2  # started at 0 and 1 s (a claim takes milliseconds)
    checks = []
    assert run_trials(study, slow, url=url, target=50, should_stop=lambda: checks.append(1) or len(checks) > 3) == 3
    assert len(study.trials) == 5


def test_a_trial_that_fails_to_prepare_or_is_interrupted_says_why(tmp_path):
    """A Ctrl-C (or a bug) between the claim and training fails the trial with its reason, so it is
    never read as a dead worker's and retried; an interrupt inside the objective that did not say
    why is recorded as the interruption, and both propagate."""
    from optuna.trial import TrialState

    from nas_kd.study import INTERRUPTED
    from nas_kd.workers import run_trials

    study, url = _fresh_study(tmp_path, heartbeat=None)

    def broken(trial):
        raise RuntimeError("the sampler broke")

    with pytest.raises(RuntimeError):
        run_trials(study, lambda t: 1.0, url=url, target=5, prepare=broken)

    def interrupted(trial):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_trials(study, interrupted, url=url, target=5)
    first, second = study.trials
    assert (first.state, first.user_attrs["fail_reason"]) == (TrialState.FAIL, "RuntimeError: the sampler broke")
    assert (second.state, second.user_attrs["fail_reason"]) == (TrialState.FAIL, INTERRUPTED)


def test_one_worker_finalises_each_winner_and_a_dead_one_is_taken_over(tmp_path):
    """claim_finalize: the first caller for a key finalises, the others do not while it lives; a new
    key (more trials, a new winner) is finalised again; a finaliser whose process died on this host
    is taken over; one on another host is trusted (its process cannot be checked from here)."""
    import socket

    from nas_kd.workers import FINALIZE_ATTR, claim_finalize, mark_finalized

    study, url = _fresh_study(tmp_path, heartbeat=None)
    assert claim_finalize(study, url, "trial 3") and not claim_finalize(study, url, "trial 3")
    assert claim_finalize(study, url, "trial 7")  # a new winner
    mark_finalized(study)
    assert not claim_finalize(study, url, "trial 7")  # done
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname()
    for owner, taken in ((f"{host}:{dead.pid}", True), (f"elsewhere.example:{dead.pid}", False), (f"{host}:{os.getpid()}", False)):
        study.set_user_attr(FINALIZE_ATTR, {"by": owner, "key": "trial 9", "done": False})
        assert claim_finalize(study, url, "trial 9") == taken, owner


def test_a_ctrl_c_while_the_trial_is_being_claimed_fails_it_with_the_reason(tmp_path, monkeypatch):
    """Between `study.ask()` creating the trial and the code that fails it on an interrupt, the
    claim writes the trial's first heartbeat (a database write: milliseconds). A Ctrl-C there
    raised out of the claim and left a RUNNING trial without parameters (test_jobs' Ctrl-C test
    failed on it in 2 of 7 full runs). Held until the trial is in the loop's hands, it fails the
    trial with the interruption as its reason and still stops the loop."""
    from optuna.trial import TrialState

    from nas_kd.study import INTERRUPTED
    from nas_kd.workers import run_trials

    study, url = _fresh_study(tmp_path)
    real = study._storage.record_heartbeat

    def pressed_during_the_write(trial_id):
        os.kill(os.getpid(), signal.SIGINT)  # the key pressed while the heartbeat is written
        return real(trial_id)

    monkeypatch.setattr(study._storage, "record_heartbeat", pressed_during_the_write)
    ran = []
    # Python's own handler: a test process started as a background job without job control
    # inherits an ignored SIGINT (which `release` rightly leaves ignored), and the test would
    # then see no interrupt at all (it did, in a `nohup ... &` loop of this file).
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            run_trials(study, lambda t: ran.append(t.number) or 1.0, url=url, target=5, prepare=lambda t: t.suggest_int("width", 8, 32))
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is back
    finally:
        signal.signal(signal.SIGINT, before)
    (trial,) = study.trials
    assert ran == [] and (trial.state, trial.user_attrs.get("fail_reason")) == (TrialState.FAIL, INTERRUPTED)
    assert trial.params == {"width": trial.params["width"]}  # the claim finished: its parameters are in the study


def test_a_ctrl_c_while_a_trained_trial_is_told_records_it_and_still_stops(tmp_path, monkeypatch):
    """After the objective returned, the loop tells the study (a database write). A Ctrl-C there
    raised out of the tell and left the trained trial RUNNING (test_jobs' Ctrl-C test failed on it
    once in CI, 2026-12-06: the parent's trial had its train_seconds and no end). Held until the
    trial is recorded, it is COMPLETE with its value and the loop still stops."""
    from optuna.trial import TrialState

    from nas_kd.workers import run_trials

    study, url = _fresh_study(tmp_path)
    real = study.tell

    def pressed_during_the_tell(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # the key pressed as the trial is told
        return real(*args, **kwargs)

    monkeypatch.setattr(study, "tell", pressed_during_the_tell)
    told = []
    before = signal.signal(signal.SIGINT, signal.default_int_handler)  # see the test above
    try:
        with pytest.raises(KeyboardInterrupt):
            run_trials(study, lambda t: 0.75, url=url, target=5, after_trial=lambda _s, t: told.append(t.state))
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, before)
    (trial,) = study.trials
    assert (trial.state, trial.value) == (TrialState.COMPLETE, 0.75) and told == [TrialState.COMPLETE]
