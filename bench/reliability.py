"""Reliability figures: workers, kills, interrupts, bad inputs and trials lost, from the real tests.

    python -m bench.reliability

Runs tests/test_workers.py (real PostgreSQL, SIGKILL, SIGINT, SQLite resume), the interrupted
finalize of tests/test_jobs.py and tests/test_bad_inputs.py, reads their JUnit results, and writes docs/RELIABILITY.md. Every figure
comes from a test assertion: "trials lost" is zero only because the tests assert that every
finished trial is still there, unchanged, after the kills.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

from bench._report import hardware

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "RELIABILITY.md"

SCENARIOS = {
    "test_three_workers_on_postgres_survive_a_sigkill": ("PostgreSQL, 1 worker SIGKILLed mid-trial, then 3 workers", 4, 12, 1, 0),
    "test_sqlite_sigkill_then_same_command_resumes_without_losing_trials": ("SQLite, SIGKILL mid-trial, same command again", 2, 6, 1, 0),
    "test_sigint_marks_the_trial_writes_a_partial_report_and_exits_130": ("SQLite, SIGINT (Ctrl-C) mid-trial: exit 130, partial report", 1, None, 0, 1),
    "test_two_processes_on_one_sqlite_study_share_it": ("SQLite, 2 processes on one study", 2, 6, 0, 0),
    "test_a_finalize_stopped_by_ctrl_c_keeps_its_finished_runs_and_trains_only_the_rest": ("`nas-kd finalize --jobs 2` stopped by Ctrl-C after its first run, then finalize again", 2, None, 0, 1),
}
FINALIZE_TEST = "tests/test_jobs.py::test_a_finalize_stopped_by_ctrl_c_keeps_its_finished_runs_and_trains_only_the_rest"


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "junit.xml"
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:warnings", f"--junitxml={xml}", "tests/test_workers.py", "tests/test_bad_inputs.py", FINALIZE_TEST]
        subprocess.run(cmd, cwd=ROOT, check=False)
        cases = ET.parse(xml).getroot().iter("testcase")
        results = {}
        for c in cases:
            failed = any(child.tag in ("failure", "error") for child in c)
            skipped = any(child.tag == "skipped" for child in c)
            results[c.get("name")] = ("failed" if failed else "skipped" if skipped else "passed", float(c.get("time", 0)))

    rows, workers, trials, kills, interrupts = [], 0, 0, 0, 0
    for name, (what, n_workers, n_trials, n_kills, n_int) in SCENARIOS.items():
        status, seconds = results.get(name, ("missing", 0.0))
        ok = status == "passed"
        workers += n_workers if ok else 0
        trials += (n_trials or 0) if ok else 0
        kills += n_kills if ok else 0
        interrupts += n_int if ok else 0
        rows.append(f"| {what} | {n_workers} | {n_trials if n_trials is not None else '-'} | {n_kills} | {status} | {seconds:.1f} |")
    bad = {k: v for k, v in results.items() if k.startswith("test_bad_input[")}
    bad_ok = sum(v[0] == "passed" for v in bad.values())
    lost = "0" if all(results.get(n, ("",))[0] == "passed" for n in SCENARIOS) else "unknown (a scenario did not pass)"

    text = f"""# Reliability

Written by `python -m bench.reliability` on {dt.date.today().isoformat()}.
Hardware: {hardware()}.
Every figure below is an assertion of a test that ran for this page
(`pytest tests/test_workers.py tests/test_bad_inputs.py` and the interrupted finalize of
tests/test_jobs.py), on tiny synthetic data with real `python -m nas_kd search` and `finalize`
processes and a real PostgreSQL server on 127.0.0.1.

## Summary

| figure | value |
|---|---:|
| worker processes run | {workers} |
| finished trials required (and reached) | {trials} |
| workers killed with SIGKILL mid-trial, survived | {kills} |
| Ctrl-C (SIGINT) interrupts handled (exit 130; a search marks its trial and writes a partial report, a finalize keeps its finished runs) | {interrupts} |
| bad inputs tried / answered with exit 2 and one line, runs/ untouched | {len(bad)} / {bad_ok} |
| finished trials lost | {lost} |

## Scenarios

| scenario | workers | trials | SIGKILLs | result | seconds |
|---|---:|---:|---:|---|---:|
{chr(10).join(rows)}

What the assertions check:
- **PostgreSQL**: exactly 12 counted trials, no duplicate trial numbers, every worker ran
  trials, no trial left RUNNING or WAITING, the killed trial is FAIL and its parameters were
  retried by another trial (Optuna's heartbeat + `RetryHeartbeatStaleTrialCallback`), and exactly
  one worker ran the final retrain, report and export.
- **SQLite kill and resume**: after SIGKILL and the same command again, the study holds the
  requested 6 trials, none RUNNING, and every trial that had finished before the kill is there
  with the same state and value.
- **SIGINT**: exit code 130, no traceback, no trial left RUNNING, a report marked partial.
- **Interrupted finalize**: `nas-kd finalize --jobs 2` (6 retrain seeds) gets SIGINT once its
  first run is kept: exit code 130, no traceback, no final report, at least one run kept; the
  next finalize trains exactly the runs that were not kept (`runs/<study>/final/runs/`).
- **Bad inputs**: each of the {len(bad)} cases in `tests/test_bad_inputs.py` (budgets, search-space
  YAML, dataset names and files, teacher files including pickles that would create a file if
  unpickled, storage URLs, out-of-range and conflicting options) exits 2 with one line starting
  `nas-kd: error:`, prints no traceback, creates no `PWNED` file and leaves `runs/` byte-for-byte
  as it was.

## How a crash is survived

See docs/DISTRIBUTED.md: trials are claimed under a study-wide lock (PostgreSQL advisory lock,
or a file lock next to a SQLite database), running trials send heartbeats, and a trial silent for
three heartbeats is failed and its parameters queued again by the next worker that claims.
"""
    OUT.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
