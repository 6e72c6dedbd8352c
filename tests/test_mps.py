"""The private MPS server of ``--gpu-step mps=1`` (nas_kd.mps), on the CPU.

No GPU here, so `nvidia-cuda-mps-control` is a stand-in script on PATH that records how it was
called and with which pipe directory, and the probe is a Python line that checks it was started
with that directory. What is tested is the search's side: the daemon started with private
directories, every CUDA process of the search pointed at it before it starts, the fall-backs, and
the daemon told to quit whatever ends the search. Whether MPS pays is the GPU bench's question."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nas_kd import mps
from nas_kd.mps import CONTROL, LOG_ENV, PIPE_ENV, mps_server

FAKE = """#!/bin/bash
# Stand-in for the MPS control program: records each call with the pipe directory it saw.
if [ "$1" = "-d" ]; then
  echo "start $CUDA_MPS_PIPE_DIRECTORY $CUDA_MPS_LOG_DIRECTORY" >> "$FAKE_MPS_LOG"
  exit "${FAKE_MPS_START_RC:-0}"
fi
read -r command
echo "$command $CUDA_MPS_PIPE_DIRECTORY" >> "$FAKE_MPS_LOG"
if [ "$command" = "get_server_list" ]; then echo "${FAKE_MPS_SERVERS-4242}"; fi
"""
# The probe a CUDA process stands for: it fails unless started with the daemon's directory.
PROBE_NEEDS_PIPE = f"import os, sys; sys.exit(0 if os.path.isdir(os.environ.get('{PIPE_ENV}', '')) else 3)"


@pytest.fixture
def fake_control(tmp_path, monkeypatch):
    """The stand-in on PATH; returns the file its calls are recorded in."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / CONTROL
    script.write_text(FAKE)
    script.chmod(0o755)
    record = tmp_path / "calls.txt"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_MPS_LOG", str(record))
    monkeypatch.delenv(PIPE_ENV, raising=False)
    monkeypatch.delenv(LOG_ENV, raising=False)
    monkeypatch.setattr(mps, "PROBE", PROBE_NEEDS_PIPE)
    return record


def _calls(record: Path) -> list[list[str]]:
    return [line.split() for line in record.read_text().splitlines()] if record.exists() else []


def test_server_started_private_shared_with_children_and_quit(fake_control):
    lines = []
    with mps_server(lines.append) as pipe:
        assert pipe is not None and Path(pipe).is_dir() and Path(pipe).parent.name.startswith("nas-kd-mps-")
        assert os.environ[PIPE_ENV] == pipe and Path(os.environ[LOG_ENV]).is_dir()
        # A trial process started now (subprocess.Popen, the spawn pool) inherits the directory.
        seen = subprocess.run([sys.executable, "-c", f"import os; print(os.environ['{PIPE_ENV}'])"], capture_output=True, text=True, check=True).stdout.strip()
        assert seen == pipe
    calls = _calls(fake_control)
    assert [c[0] for c in calls] == ["start", "get_server_list", "quit"]
    assert all(c[1] == pipe for c in calls)  # one daemon, addressed by its own directory throughout
    assert PIPE_ENV not in os.environ and LOG_ENV not in os.environ  # the environment restored
    assert not Path(pipe).parent.exists()  # the temporary directory removed
    assert lines == [f"mps: the trial processes share the device through MPS server 4242 (pipes in {pipe})"]


def test_a_users_own_log_directory_is_restored_after_the_search(fake_control, monkeypatch, tmp_path):
    # A log directory set without a pipe directory is not an MPS in use: the server is started
    # with its own log directory, and the user's comes back when the search ends.
    theirs = str(tmp_path / "their-mps-log")
    monkeypatch.setenv(LOG_ENV, theirs)
    with mps_server(lambda _: None) as pipe:
        assert pipe is not None and os.environ[LOG_ENV] != theirs
    assert os.environ[LOG_ENV] == theirs and PIPE_ENV not in os.environ


def test_quit_even_when_the_search_is_interrupted(fake_control):
    with pytest.raises(KeyboardInterrupt), mps_server(lambda _: None) as pipe:
        raise KeyboardInterrupt
    assert [c[0] for c in _calls(fake_control)] == ["start", "get_server_list", "quit"]
    assert PIPE_ENV not in os.environ and not Path(pipe).parent.exists()


@pytest.mark.parametrize(
    ("env", "probe", "said", "quit"),
    [
        ({"FAKE_MPS_START_RC": "1"}, None, f"{CONTROL} -d failed (exit code 1)", False),
        ({}, "import sys; sys.exit(5)", "a CUDA process could not start through it (exit code 5)", True),
        ({"FAKE_MPS_SERVERS": ""}, None, "not through an MPS server (the daemon lists none)", True),
    ],
    ids=["daemon-refuses", "probe-fails", "no-server"],
)
def test_without_a_working_server_the_search_goes_on_without_mps(fake_control, monkeypatch, env, probe, said, quit):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    if probe is not None:
        monkeypatch.setattr(mps, "PROBE", probe)
    lines = []
    with mps_server(lines.append) as pipe:
        assert pipe is None and PIPE_ENV not in os.environ  # the processes start as without the switch
    assert len(lines) == 1 and lines[0].startswith("mps: not used: ") and said in lines[0] and lines[0].endswith("the trial processes time-share the device")
    assert ("quit" in [c[0] for c in _calls(fake_control)]) == quit  # a daemon that started is stopped


def test_no_control_program_is_said_once(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing there
    monkeypatch.delenv(PIPE_ENV, raising=False)
    lines = []
    with mps_server(lines.append) as pipe:
        assert pipe is None and PIPE_ENV not in os.environ
    assert lines == [f"mps: {CONTROL} not found (the NVIDIA driver's utilities); the trial processes time-share the device"]


def test_a_users_own_mps_is_left_alone(fake_control, monkeypatch, tmp_path):
    monkeypatch.setenv(PIPE_ENV, str(tmp_path / "theirs"))
    with mps_server(lambda _: None) as pipe:
        assert pipe == str(tmp_path / "theirs")
    assert _calls(fake_control) == [] and os.environ[PIPE_ENV] == str(tmp_path / "theirs")  # nothing started or stopped


def _plan(tmp_path, gpu_step: str, jobs: int, device: str | None = None):
    from nas_kd.search import SearchOptions, build_plan

    return build_plan(SearchOptions(budget="130k", space="tiny", dataset="synthetic", preset="quick", mode="ce", study="mps", storage=f"sqlite:///{tmp_path}/s.db", jobs=jobs, gpu_step=gpu_step, device=device))


def test_search_starts_the_server_before_its_work_where_several_processes_share_a_gpu(fake_control, tmp_path, monkeypatch):
    import nas_kd.device
    import nas_kd.search as search

    seen = {}

    def fake_search(plan, opts, *, log, finish):
        seen["pipe"] = os.environ.get(PIPE_ENV)  # what the search's CUDA work, and its children, start with
        return {}

    monkeypatch.setattr(search, "_search", fake_search)
    monkeypatch.setattr(nas_kd.device, "cuda_present", lambda: True)  # a GPU, as far as the decision goes
    lines = []
    opts = search.SearchOptions(budget="130k", space="tiny", dataset="synthetic", preset="quick", mode="ce", study="mps", storage=f"sqlite:///{tmp_path}/s.db", jobs=2, gpu_step="mps=1")
    search.run_search(opts, log=lines.append)
    assert seen["pipe"] is not None and [c[0] for c in _calls(fake_control)] == ["start", "get_server_list", "quit"]
    assert any(line.startswith("mps: the trial processes share the device") for line in lines)
    # Without the switch, or with one process, nothing is started.
    for changes, said in (({"gpu_step": None}, []), ({"jobs": 1}, ["search: mps=1 acts where several processes share a GPU (--jobs 1): not started"])):
        fake_control.unlink(missing_ok=True)
        lines.clear()
        search.run_search(search.SearchOptions(**{**opts.__dict__, **changes}), log=lines.append)
        assert seen["pipe"] is None and _calls(fake_control) == [] and lines == said


def test_search_on_a_cpu_says_mps_is_not_started(fake_control, tmp_path):
    from nas_kd.mps import device_sharing

    plan = _plan(tmp_path, "mps=1", 2)
    lines = []
    with device_sharing(plan.step.mps, plan.jobs, plan.device, lines.append):
        assert PIPE_ENV not in os.environ
    assert lines == ["search: mps=1 acts where several processes share a GPU (no GPU here): not started"] and _calls(fake_control) == []


def test_mps_switch_parses_and_is_described():
    from nas_kd.device import StepOptions, parse_step_options

    assert parse_step_options("mps=1") == StepOptions(mps=True)
    assert StepOptions(mps=True).describe().endswith(",mps=1") and not StepOptions().mps


def test_finalize_serves_its_retrain_through_the_searchs_server(fake_control, monkeypatch):
    """`nas-kd finalize` retrains with the plan's switches: where the search asked for mps=1 and
    the retrain runs several processes on a GPU, its pool starts through the server too."""
    import argparse
    import types

    import nas_kd.device
    import nas_kd.plan
    import nas_kd.search
    import nas_kd.study
    from nas_kd.commands import finalize
    from nas_kd.device import StepOptions

    seen = []
    monkeypatch.setattr(nas_kd.device, "cuda_present", lambda: True)
    monkeypatch.setattr(nas_kd.study, "load_study", lambda name, storage=None: name)
    monkeypatch.setattr(nas_kd.plan, "plan_of", lambda study: types.SimpleNamespace(step=StepOptions(mps=True), jobs=4, device="auto"))
    monkeypatch.setattr(nas_kd.search, "finish_study", lambda *a, **kw: seen.append(os.environ.get(PIPE_ENV)) or {"verdict": "-"})
    args = argparse.Namespace(study="s", storage=None, retrain_seeds=None, baselines=None, device=None, jobs=None, progress=False)
    assert finalize.run(args) == 0
    assert seen[0] is not None and [c[0] for c in _calls(fake_control)] == ["start", "get_server_list", "quit"]
    fake_control.unlink()
    assert finalize.run(argparse.Namespace(**{**vars(args), "jobs": 1})) == 0  # one run at a time: no server
    assert seen[1] is None and _calls(fake_control) == []


def test_a_quit_the_daemon_does_not_answer_does_not_hold_the_search(fake_control, tmp_path, monkeypatch):
    """The daemon may wait for this process (a client to the end) before it answers the quit: the
    search goes on after `QUIT_SECONDS`, leaving the daemon its directory until it ends."""
    import time

    script = Path(os.environ["PATH"].split(os.pathsep)[0]) / CONTROL
    script.write_text(FAKE.replace('read -r command\n', 'read -r command\n[ "$command" = "quit" ] && sleep 30\n'))
    monkeypatch.setattr(mps, "QUIT_SECONDS", 0.5)
    t0 = time.monotonic()
    with mps_server(lambda _: None) as pipe:
        pass
    assert time.monotonic() - t0 < 20 and PIPE_ENV not in os.environ
    assert Path(pipe).is_dir()  # not pulled from under a daemon still running
    shutil.rmtree(Path(pipe).parent)
