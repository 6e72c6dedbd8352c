"""Run a study's trials from any number of worker processes, exactly ``target`` of them.

`study.optimize` checks a trial budget only *after* each trial, so N workers overshoot by up to
N-1 trials, and a trial left RUNNING by a killed worker would block or be lost. `run_trials` is
Optuna's ask/tell loop with three additions:

1. **Claims under a lock.** Each worker takes `nas_kd.storage.study_lock` (a PostgreSQL
   advisory lock, or a file lock for SQLite), fails stale trials, counts finished + running +
   waiting trials and only then asks for a new one. Never more than ``target`` are started.
2. **Heartbeats.** While a trial runs, Optuna's heartbeat thread updates it every
   ``heartbeat_interval`` seconds. A worker killed with SIGKILL stops beating; after the grace
   period the next worker to claim marks its trial FAIL, and the storage's retry callback
   enqueues the same parameters as a WAITING trial, which the next claim picks up. Optuna's
   stale check skips a trial that has no heartbeat at all (the others would wait for it
   forever), so the first one is recorded under the lock right after the trial is created:
   only a kill in the milliseconds between the two can leave such a trial.
3. **One finaliser.** `claim_finalize` lets exactly one worker (the first to see the target
   reached) run the final retrain, report and export.

Which trials count towards ``target`` is `nas_kd.study.finished_trials`.
"""

from __future__ import annotations

import os
import socket
import time
import warnings
from collections.abc import Callable

from nas_kd.interrupts import HeldInterrupts
from nas_kd.storage import study_lock

__all__ = ["run_trials", "claim_finalize", "mark_finalized", "worker_id", "FINALIZE_ATTR"]

FINALIZE_ATTR = "nas_kd_finalize"
POLL_SECONDS = 2.0  # how often an idle worker looks again while others finish the last trials


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _claim(study, url: str, target: int | None, prepare: Callable | None = None):
    """Under the study lock: a new trial to run, "wait" (others are finishing), or None (done)."""
    import optuna
    from optuna.storages import fail_stale_trials
    from optuna.storages._heartbeat import is_heartbeat_enabled
    from optuna.trial import TrialState

    from nas_kd.study import finished_trials

    with study_lock(url, study.study_name):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            fail_stale_trials(study)  # a dead worker's trial -> FAIL, and its retry -> WAITING
        trials = study.get_trials(deepcopy=False)
        if target is not None:
            done = len(finished_trials(trials))
            live = sum(t.state in (TrialState.RUNNING, TrialState.WAITING) for t in trials)
            waiting = any(t.state == TrialState.WAITING for t in trials)
            if done >= target:
                return None
            if done + live >= target and not waiting:
                return "wait"
        with _quiet(optuna), warnings.catch_warnings():
            # Optuna expects heartbeats only inside study.optimize; run_trials runs the heartbeat thread itself.
            warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
            trial = study.ask()
        if is_heartbeat_enabled(study._storage):
            # Before `prepare` and the heartbeat thread: a worker killed from here on leaves a trial the stale check fails.
            study._storage.record_heartbeat(trial._trial_id)
        if prepare is not None:
            # Still under the lock: the trial's parameters reach the storage before any other
            # worker's sampler reads the study (so two workers never draw the same config).
            try:
                prepare(trial)
            except BaseException as e:
                # A bug (or a Ctrl-C outside the main thread, where `run_trials` cannot hold it)
                # between claim and training must not leave the trial RUNNING or FAIL without a
                # reason (which reads as a dead worker's, to be retried).
                trial.set_user_attr("fail_reason", _reason(e))
                study.tell(trial, state=TrialState.FAIL)
                raise
        return trial


class _quiet:
    """Optuna logs an INFO line per ask; the search prints its own line per trial."""

    def __init__(self, optuna):
        self.logging = optuna.logging

    def __enter__(self):
        self.level = self.logging.get_verbosity()
        self.logging.set_verbosity(self.logging.WARNING)

    def __exit__(self, *exc):
        self.logging.set_verbosity(self.level)


def run_trials(
    study,
    objective: Callable,
    *,
    url: str,
    target: int | None,
    timeout: float | None = None,
    catch: tuple[type[BaseException], ...] = (),
    after_trial: Callable | None = None,
    should_stop: Callable[[], bool] | None = None,
    prepare: Callable | None = None,
) -> int:
    """Run trials until ``target`` are finished study-wide (or ``timeout`` s, or ``should_stop()``).

    ``objective(trial)`` returns the value(s) to tell, or raises: `optuna.TrialPruned` -> PRUNED;
    an exception in ``catch`` -> FAIL, and the loop goes on; anything else (KeyboardInterrupt
    included) -> the trial is told FAIL and the exception propagates. ``prepare(trial)`` runs
    under the study lock right after the trial is created. Returns trials run here.
    """
    import optuna
    from optuna.storages._heartbeat import get_heartbeat_thread
    from optuna.trial import TrialState

    deadline = time.monotonic() + timeout if timeout else None
    ran = 0
    while True:
        if deadline is not None and time.monotonic() >= deadline:
            break
        if should_stop is not None and should_stop():
            break
        # A Ctrl-C during the claim is held until the trial is inside the try below, whose
        # handlers fail it with the reason: raised inside the claim (its first heartbeat is a
        # database write, after `study.ask()` created the trial) it left a RUNNING trial.
        held = HeldInterrupts().hold()
        try:
            trial = _claim(study, url, target, prepare)
        except BaseException:
            held.release()
            raise
        if trial is None or trial == "wait":
            held.release()
            if trial is None:
                break
            time.sleep(POLL_SECONDS)
            continue
        state, values = TrialState.FAIL, None
        try:
            held.release()
            with get_heartbeat_thread(trial._trial_id, study._storage):
                values = objective(trial)
            state = TrialState.COMPLETE
        except optuna.TrialPruned:
            state = TrialState.PRUNED
        except catch:
            state = TrialState.FAIL
        except KeyboardInterrupt as e:
            if not trial.user_attrs.get("fail_reason"):  # stopped before the objective said why
                trial.set_user_attr("fail_reason", _reason(e))
            raise
        finally:
            # Runs for KeyboardInterrupt too, so a Ctrl-C never leaves the trial RUNNING; and a
            # Ctrl-C that arrives while the trial is told is held until it is recorded (raised
            # inside the tell, it left a trained trial RUNNING: test_jobs' Ctrl-C test, 1 CI run).
            held = HeldInterrupts().hold()
            try:
                with _quiet(optuna):
                    study.tell(trial, values if state == TrialState.COMPLETE else None, state=state)
                ran += 1
                if after_trial is not None:
                    after_trial(study, study._storage.get_trial(trial._trial_id))
            finally:
                held.release()
    return ran


def _reason(e: BaseException) -> str:
    from nas_kd.study import INTERRUPTED

    return INTERRUPTED if isinstance(e, KeyboardInterrupt) else f"{type(e).__name__}: {str(e)[:200]}"


def _alive(owner: str) -> bool:
    """False only when ``owner`` ("host:pid") is a process of this host that no longer exists."""
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True  # another machine's worker: trust it (nas-kd finalize redoes it by hand)
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def claim_finalize(study, url: str, key: str) -> bool:
    """True for exactly one caller per study and ``key`` (e.g. the winning trial): the worker that
    finalises. Others get False.

    A new key (more trials found a new winner) is finalised again; a finalisation whose process
    died on this machine (killed mid-retrain) is taken over, so the same command completes it."""
    with study_lock(url, study.study_name):
        current = study._storage.get_study_user_attrs(study._study_id).get(FINALIZE_ATTR)
        if current is not None and current.get("key") == key and (current.get("done") or _alive(current.get("by", ""))):
            return False
        study.set_user_attr(FINALIZE_ATTR, {"by": worker_id(), "key": key, "started": time.time(), "done": False})
        return True


def mark_finalized(study) -> None:
    info = dict(study._storage.get_study_user_attrs(study._study_id).get(FINALIZE_ATTR) or {})
    study.set_user_attr(FINALIZE_ATTR, {**info, "done": True, "finished": time.time()})
