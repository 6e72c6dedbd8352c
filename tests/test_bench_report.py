"""bench._report.numerics_fingerprint: one value per host, another where the kernels differ."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench._report import hardware, numerics_fingerprint

ROOT = Path(__file__).resolve().parents[1]


def _in_subprocess(capability: str) -> str:
    env = {**os.environ, "ATEN_CPU_CAPABILITY": capability, "PYTHONPATH": str(ROOT)}
    code = "from bench._report import numerics_fingerprint; print(numerics_fingerprint())"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout.strip()


def test_the_fingerprint_is_stable_leaves_the_thread_count_and_is_in_every_header():
    threads = torch.get_num_threads()
    first = numerics_fingerprint()
    numerics_fingerprint.cache_clear()
    assert numerics_fingerprint() == first and torch.get_num_threads() == threads
    assert f"CPU numerics {first}" in hardware()


@pytest.mark.skipif(torch.backends.cpu.get_cpu_capability() == "DEFAULT", reason="the host itself runs the unvectorised kernels")
def test_other_cpu_kernels_give_another_fingerprint():
    # Unvectorised kernels round differently from the host's best: the fingerprint must see it.
    assert _in_subprocess("default").split()[0] != numerics_fingerprint().split()[0]


def test_the_code_revision_is_dirty_for_changed_code_not_for_results_written_under_docs(tmp_path):
    import subprocess

    from bench._report import code_revision

    def git(*args):
        subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=tmp_path, check=True, capture_output=True)

    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "r.json").write_text("{}")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "one")
    clean = code_revision(tmp_path)
    assert clean != "unknown" and not clean.endswith("+dirty")
    (tmp_path / "docs" / "r.json").write_text('{"runs": 1}')  # a bench keeping its results
    (tmp_path / "notes.txt").write_text("untracked")
    assert code_revision(tmp_path) == clean
    (tmp_path / "code.py").write_text("x = 2\n")
    assert code_revision(tmp_path) == clean + "+dirty"
    assert code_revision(tmp_path / "docs" / "missing") == "unknown"


def test_a_result_counts_as_trained_since_a_commit_only_where_that_commit_is_in_its_revision(tmp_path):
    import subprocess

    from bench._report import resolve_commit, trained_since

    def git(*args):
        return subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=tmp_path, check=True, capture_output=True, text=True).stdout.strip()

    git("init", "-q")
    for n in ("one", "two"):
        (tmp_path / "code.py").write_text(f"x = '{n}'\n")
        git("add", ".")
        git("commit", "-qm", n)
    one, two = git("rev-parse", "--short", "HEAD~1"), git("rev-parse", "--short", "HEAD")
    assert resolve_commit(one, tmp_path) == git("rev-parse", "HEAD~1") and resolve_commit("no-such-ref", tmp_path) is None
    assert trained_since(two, one, tmp_path) and trained_since(one, one, tmp_path) and trained_since(two + "+dirty", one, tmp_path)
    assert not trained_since(one, two, tmp_path) and not trained_since(one + "+dirty", two, tmp_path)  # trained before the fix
    assert not trained_since(None, one, tmp_path) and not trained_since("unknown", one, tmp_path)  # unrecorded: older
    assert not trained_since("0123abc", one, tmp_path)  # a revision this checkout does not hold


def _keep_many(path, prefix, n):
    from bench._report import keep_run

    for i in range(n):
        keep_run(path, f"{prefix}{i}", {"i": i})


def test_runs_kept_by_two_processes_in_one_file_all_survive(tmp_path):
    import json
    import multiprocessing

    from bench._report import keep_run

    path = tmp_path / "results" / "runs.json"
    record = keep_run(path, "first", {"i": -1})
    assert record == {"runs": {"first": {"i": -1}}} == json.loads(path.read_text())
    ctx = multiprocessing.get_context("fork")
    writers = [ctx.Process(target=_keep_many, args=(path, prefix, 25)) for prefix in ("a", "b")]
    for w in writers:
        w.start()
    for w in writers:
        w.join(60)
    assert [w.exitcode for w in writers] == [0, 0]
    runs = json.loads(path.read_text())["runs"]
    assert set(runs) == {"first"} | {f"{p}{i}" for p in "ab" for i in range(25)}  # none dropped by the other's rewrite
    assert list(path.parent.iterdir()) == [path]  # no temporary or lock file left beside the results


def test_a_bench_asked_not_to_write_keeps_its_runs_in_memory_alone(tmp_path):
    """`record_run` with ``write=False`` (a bench's --no-write): the run joins the record it was
    given and the results file stays as it was; with ``write=True`` it is kept in the file,
    beside what another bench kept there meanwhile."""
    import json

    from bench._report import keep_run, record_run

    path = tmp_path / "runs.json"
    keep_run(path, "theirs", {"i": 0})
    before = path.read_text()
    mine = record_run(path, "mine", {"i": 1}, {"runs": {}}, write=False)
    assert mine == {"runs": {"mine": {"i": 1}}} and path.read_text() == before
    kept = record_run(path, "mine", {"i": 1}, {"runs": {}}, write=True)
    assert kept == {"runs": {"theirs": {"i": 0}, "mine": {"i": 1}}} == json.loads(path.read_text())
