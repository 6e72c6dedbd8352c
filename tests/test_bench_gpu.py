"""`make bench-gpu SMOKE=1`: every GPU section's code path in miniature on the CPU (synthetic data,
a tiny space), split over three tests so each stays short; plus the runner's own rules: a call
stops before a section it has no time for, finished sections are skipped, the pack holds what
the next call resumes from."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

from bench.gpu import PACKS_LOG, sections
from bench.gpu_sizes import GPU, SMOKE, JobsRun
from bench.gpu_step import GRAPHED, GRAPHED_FP32, PARTS, SWITCHES, THREAD_ROWS

ROOT = Path(__file__).resolve().parent.parent
NAMES = [s.name for s in sections(SMOKE)]
SEARCHES = [n for n in NAMES if n.startswith("search-")]



def _config(tmp_path, seconds: float, sizes=SMOKE, results=None, **more):
    """A bench call's `Config` on this CPU working in ``tmp_path``, its deadline ``seconds`` from
    now; results in tmp_path/results unless given (the plan tests keep the state archive in tmp_path)."""
    import time

    import torch

    from bench.gpu import Config

    return Config(sizes=sizes, device=torch.device("cpu"), data_dir=None, results=results or tmp_path / "results", markdown=tmp_path / "B.md", work=tmp_path, deadline=time.monotonic() + seconds, argv=(), **more)

def _bench(work: Path, *args: str) -> str:
    r = subprocess.run([sys.executable, "-m", "bench.gpu", "--smoke", "--work", str(work), *args], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r.stdout


def _done(work: Path) -> dict[str, dict]:
    return {p.stem.removeprefix("gpu_"): json.loads(p.read_text()) for p in (work / "results").glob("gpu_*.json")}


def test_a_call_stops_before_a_section_it_has_no_time_for(tmp_path):
    out = _bench(tmp_path, "--call-seconds", "0.5")
    assert "no time for teachers" in out and "no time for ablation" in out and "run the same command again" in out
    assert _done(tmp_path) == {}


def test_make_bench_gpu_smoke_measures_teachers_loader_and_steps(tmp_path):
    first = ["teachers", "loader", "step", "steptime", "teacher-large"]
    r = subprocess.run(["make", "--no-print-directory", "bench-gpu", "SMOKE=1", f"SECTION={','.join(first)}", f"WORK={tmp_path}", f"BENCH_PYTHON={sys.executable}", f"PACK={tmp_path / 'p.tar.gz'}"], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "bench-gpu: all sections done" in r.stdout
    # packed at each finished section and at the end, and (quietly) as each of the step's parts began and ended
    assert r.stdout.count("bench-gpu: packed") == len(first) + 1
    assert (tmp_path / PACKS_LOG).read_text().count("bench-gpu: packed") == 2 * len(PARTS)
    done = _done(tmp_path)
    assert sorted(done) == sorted(first) and all(d["smoke"] for d in done.values())
    step = done["step"]["result"]
    fewer_threads = {name for name, n in THREAD_ROWS.items() if n < step["switches"]["threads"]}
    assert fewer_threads and set(step["switches"]["seconds"]) == set(step["switches"]["new_student_seconds"]) == set(SWITCHES) | fewer_threads
    assert all(v > 0 for v in step["switches"]["new_student_seconds"].values())
    assert step["breakdown"]["profile"]["aten_ops"] > 0 and step["breakdown"]["seconds"]["full"] > 0
    assert step["breakdown"]["profile"]["parts"]["discriminator_update"]["aten_ops"] > 0 and "Where the full step's launches go" in step["markdown"]
    assert all("error" not in v for v in step["compile"].values()), step["compile"]
    keys = ["batch_size", "cached_teacher", "eager", "mode", "steps_per_epoch", "student"]
    assert [(b["student"], b["mode"], b["batch_size"], b["cached_teacher"], sorted(b)) for b in step["batch"]] == [("the section's", "full", bs, True, keys) for bs in (32, 64)] + [(step["batch"][2]["student"], m, 32, True, keys) for m in ("full", "kd")]
    assert step["batch"][2]["student"].endswith("-MAC") and "steady epoch, fastest" in step["markdown"]  # the goal student's rows
    assert all(b["eager"]["seconds_per_step"] > 0 for b in step["batch"])
    assert step["graph"] == {GRAPHED: {"error": "skipped: needs CUDA"}, GRAPHED_FP32: {"error": "skipped: needs CUDA"}}
    assert sorted(p.stem for p in (tmp_path / "step").glob("*.json")) == sorted(PARTS)  # each part kept as it finished
    assert done["steptime"]["result"]["epoch_seconds"]["large"]["kd"] > 0
    # The larger teacher's own recipe, not the teachers section's: a file of its own.
    arch, recipe = SMOKE.large_teacher
    assert [r["arch"] for r in done["teacher-large"]["result"]["rows"]] == [arch] and f"{recipe.epochs} epochs" in done["teacher-large"]["result"]["markdown"]
    assert done["teacher-large"]["result"]["rows"][0]["paths"] != done["teachers"]["result"]["rows"][0]["paths"]
    markdown = (tmp_path / "BENCHMARKS.md").read_text()
    for name in first:
        assert f"<!-- BEGIN gpu-{name} -->" in markdown
    for real in (ROOT / "docs" / "results").glob("gpu_*.json"):  # the smoke run never writes into docs/
        assert not json.loads(real.read_text())["smoke"], real


def test_smoke_searches_with_one_and_with_two_processes(tmp_path):
    out = _bench(tmp_path, "--section", ",".join(["jobs", *SEARCHES]))
    done = _done(tmp_path)
    assert sorted(done) == sorted(["jobs", *SEARCHES])
    rows = done["jobs"]["result"]["rows"]
    assert [JobsRun.of_row(r) for r in rows] == SMOKE.jobs_runs() == [JobsRun(1), JobsRun(2), JobsRun(2, "graph=1", ""), JobsRun(2, "mps=1", "")]
    assert all(r["trained"] == SMOKE.jobs[1] for r in rows)
    plain = json.loads((tmp_path / "runs" / "gpu_jobs2" / "config.json").read_text())
    variant = json.loads((tmp_path / "runs" / "gpu_jobs2-graph-1-preset-brief" / "config.json").read_text())
    assert variant["gpu_step"]["graph"] is True  # the switch reached the search's plan (a CPU then ignores it)
    shared = json.loads((tmp_path / "runs" / "gpu_jobs2-mps-1-preset-brief" / "config.json").read_text())
    assert shared["gpu_step"]["mps"] is True and shared["jobs"] == 2
    # Its search ran in a process of its own (an MPS server serves only processes whose CUDA starts
    # after it), which on a CPU starts none and says why.
    assert out.count("search: mps=1 acts where several processes share a GPU (no GPU here): not started") == 1
    # Each row's brief schedule: the kept rows' crops (jobs_brief), the variant's the preset's own.
    assert plain["preset"]["brief"]["crop"] is True and variant["preset"]["brief"]["crop"] is False
    assert done["jobs"]["result"]["epoch_seconds"] > 0
    md = done["jobs"]["result"]["markdown"]
    assert "trials per hour of `--jobs 1`" in md and "epoch with the teacher under" in md and "| 2, `--gpu-step graph=1` | 2 |" in md
    assert "**Mode kd, brief schedule `--brief crop=1`**" in md and "**Mode kd, brief schedule of the preset**" in md and "The same epoch in mode kd with the brief schedule of the preset" in md
    assert out.count("search: worker 1 started") == 3  # only the --jobs 2 searches start a child
    assert "graph in its trials: not graphed (no CUDA)" in md
    assert out.count("search: GPU step ") == 2 and "graph=1,mps=0; a CPU applies only check_every" in out  # said, not silently ignored
    assert md.count("graph in its trials") == 1  # the graph row's alone
    for name in SEARCHES:
        assert done[name]["result"]["report"]["trial_counts"]["finished"] == SMOKE.trials
    markdown = (tmp_path / "BENCHMARKS.md").read_text()
    assert "<!-- BEGIN gpu-search -->" in markdown and "<!-- BEGIN gpu-jobs -->" in markdown
    # The whole search's time: its trials and what followed them, and the goal judged on their sum.
    first = done[SEARCHES[0]]["result"]["report"]
    assert first["finish_seconds"] > 0 and first["bench_seconds"] == first["search_wall_seconds"] + first["finish_seconds"]
    # Each search trained at the setup the jobs rows chose (none of the smoke rows may: the defaults), said with the goal.
    from bench.gpu_choice import DEFAULT

    assert all(done[name]["result"]["setups"] == [{"jobs": None, "gpu_step": None, "why": DEFAULT.why}] for name in SEARCHES)
    assert f"- {SMOKE.budgets[0]} {SMOKE.samplers[0]} trained at `--jobs default --gpu-step default` ({DEFAULT.why})" in markdown
    assert "s at `--jobs default --gpu-step default`: trials" in markdown
    assert "- Goal: the standard search (`make search BUDGET=130k`" in markdown


def test_smoke_ablation_keeps_each_run_trains_only_the_missing_ones_and_packs(tmp_path):
    from bench.gpu_sections import ABLATION_TIMING

    out = _bench(tmp_path, "--section", "ablation")
    total = len(SMOKE.ablation_modes) * 2 * len(SMOKE.ablation_seeds)  # modes x 2 students x seeds
    runs = _done(tmp_path)["ablation"]["result"]["runs"]
    assert len(runs) == total
    # The teacher's outputs filled once by the section and opened by each worker, not filled per run.
    assert out.count("ablation: the teacher's outputs filled once") == 1
    assert {r["teacher_outputs"] for r in runs} == {"opened"} and all(r["teacher_seconds"] < 0.05 for r in runs)
    assert not (tmp_path / "ablation-teacher").exists()  # the file and its folder went with the pool
    # As a call that ended after half of the runs leaves it: the other half trains next time.
    (tmp_path / "results" / "gpu_ablation.json").unlink()
    files = sorted(p for p in (tmp_path / "ablation").glob("*.json") if p.name != ABLATION_TIMING)  # the runs
    assert len(files) == total and (tmp_path / "ablation" / ABLATION_TIMING).is_file()  # and how long each mode took
    for p in files[: total // 2]:
        p.unlink()
    kept = {p.name: p.stat().st_mtime_ns for p in files[total // 2 :]}
    resumed = _bench(tmp_path, "--section", "ablation", "--pack", str(tmp_path / "p.tar.gz"))
    assert len(_done(tmp_path)["ablation"]["result"]["runs"]) == total
    # packed as each run was kept (a call the device kills keeps them: said in packs.log, not in the call's
    # output), then at the section's end and the call's
    assert resumed.count("bench-gpu: packed") == 2 and (tmp_path / PACKS_LOG).read_text().count("bench-gpu: packed") == total // 2
    assert all((tmp_path / "ablation" / name).stat().st_mtime_ns == t for name, t in kept.items())  # not trained again

    again = _bench(tmp_path, "--section", "ablation", "--pack", str(tmp_path / "p.tar.gz"))
    assert "ablation: done" in again and "bench-gpu: all sections done" in again
    with tarfile.open(tmp_path / "p.tar.gz") as tar:
        names = tar.getnames()
        state = tarfile.open(fileobj=tar.extractfile(f"{tmp_path.name}/results/gpu-state.tar.gz"))
    base = tmp_path.name
    assert f"{base}/results/gpu_ablation.json" in names and f"{base}/BENCHMARKS.md" in names
    assert [n for n in names if "/runs/teachers/" in n] == [f"{base}/runs/teachers/{SMOKE.teacher_file()}"]
    # The ablation's runs travel in the state archive, the teacher does not (it is retrained or shipped).
    assert sorted(n for n in state.getnames() if n.startswith("ablation/")) == sorted([f"ablation/{p.name}" for p in files] + [f"ablation/{ABLATION_TIMING}"])
    assert not [n for n in state.getnames() if "teachers" in n]

    # A later GPU session starts from a fresh machine: only the committed archive is there.
    saved = {p.name: p.read_text() for p in files}  # a retrained run differs (its timings at least)
    for p in files:
        p.unlink()
    (tmp_path / "results" / "gpu_ablation.json").unlink()
    shutil.rmtree(tmp_path / "runs" / "teachers")
    resumed = _bench(tmp_path, "--section", "ablation")
    assert f"resumed {len(state.getnames())} state files" in resumed
    assert len(_done(tmp_path)["ablation"]["result"]["runs"]) == total
    assert {p.name: p.read_text() for p in (tmp_path / "ablation").glob("*.json") if p.name != ABLATION_TIMING} == saved  # unpacked, not trained again


def test_an_ablation_without_time_for_a_run_starts_none(tmp_path, monkeypatch, capsys):


    from bench.gpu_sections import ablation

    monkeypatch.chdir(tmp_path)
    cfg = _config(tmp_path, SMOKE.ablation_run_s)
    assert ablation(cfg) is None  # cut short: the next call trains them
    assert list((tmp_path / "ablation").glob("*.json")) == []
    out = capsys.readouterr().out
    assert "teacher's outputs filled once" not in out  # nor filled the teacher's outputs for nothing
    assert f"is planned at {SMOKE.ablation_run_s:.0f} s" in out and "a whole call holds" not in out
    # A run timed longer than any call holds: said, with what to change.
    from bench.gpu_sections import ABLATION_TIMING, AblationTiming

    AblationTiming(tmp_path / "ablation" / ABLATION_TIMING, SMOKE.ablation_run_s).took({"mode": SMOKE.ablation_modes[0], "student": "small", "seed": 0}, 1000.0)
    assert ablation(cfg) is None
    from bench.gpu import CALL_SECONDS

    out = capsys.readouterr().out
    assert "is planned at 1100 s, " in out and f"s left; a whole call holds {CALL_SECONDS - SMOKE.margin_s:.0f} s: train fewer runs at once" in out


def test_an_ablation_whose_teacher_fill_takes_the_time_of_a_run_starts_none(tmp_path, monkeypatch):
    """The teacher's outputs are filled before the first run: a call with time for a run before
    the fill but not after it starts none (the run would be cut off at the call's end)."""
    import contextlib
    import time

    import bench.gpu_sections as s
    from bench.gpu import Config

    filled = []

    @contextlib.contextmanager
    def slow_fill(cfg, splits, schedule, teacher_path, log=print):
        filled.append(True)
        time.sleep(max(0.0, cfg.left() - SMOKE.margin_s - SMOKE.ablation_run_s + 0.5))  # it takes what a run needed
        yield None, None

    monkeypatch.setattr(s, "_shared_teacher_outputs", slow_fill)
    monkeypatch.chdir(tmp_path)

    def call(seconds: float) -> Config:
        return _config(tmp_path, seconds)

    s.teacher(call(0.0))  # trained now: the section's own set-up is then quick
    assert s.ablation(call(SMOKE.margin_s + SMOKE.ablation_run_s + 10.0)) is None
    assert filled == [True] and list((tmp_path / "ablation").glob("*.json")) == []  # time for a run before the fill, none after it


def test_a_search_section_starts_a_changed_study_over_and_finishes_only_after_every_trial(tmp_path, monkeypatch):
    """A study this version would refuse to resume is started afresh, not failed every call; and a
    call that ends a trial short of the target finalizes nothing (the next call resumes the trials)."""


    import bench.gpu_sections as s
    import nas_kd.search

    seen = []
    monkeypatch.setattr(s, "start_over_if_changed", lambda opts, log=print: seen.append(("start over if changed", opts.study)) or False)
    monkeypatch.setattr(nas_kd.search, "run_search", lambda opts, finish: seen.append(("trials", opts.study, finish)) or {"finished": SMOKE.trials - 1})
    monkeypatch.chdir(tmp_path)
    cfg = _config(tmp_path, 600)
    budget, sampler = SMOKE.budgets[0], SMOKE.samplers[0]
    study = s.search_study(SMOKE, budget, sampler)
    assert s.search(budget, sampler)(cfg) is None
    # Nothing finalized: the study's folder holds only the setup its trials trained with.
    assert seen == [("start over if changed", study), ("trials", study, False)] and [p.name for p in (tmp_path / "runs" / study).iterdir()] == [s.SETUPS_FILE]


def test_per_budget_only_the_first_samplers_search_trains_the_baselines(tmp_path):
    """The others share its baselines' retrains (and are estimated without them)."""


    from bench.gpu_sections import _search_options

    cfg = _config(tmp_path, 10, sizes=GPU, results=tmp_path)
    assert [_search_options(cfg, "2M", sampler, "s").baselines for sampler in GPU.samplers] == [True, False]


def test_a_teachers_goal_needs_its_accuracy_within_its_time():
    from bench.gpu_sections import teacher_target_met

    arch, acc, secs = GPU.teacher_targets[1]
    assert (arch, acc, secs) == ("wrn-16-4", 94.5, 120.0)
    assert teacher_target_met({"test_accuracy": [94.5], "train_seconds": [120.0]}, acc, secs)
    assert not teacher_target_met({"test_accuracy": [94.49], "train_seconds": [53.1]}, acc, secs)
    assert not teacher_target_met({"test_accuracy": [95.0], "train_seconds": [121.0]}, acc, secs)  # reached too late


def test_sections_run_the_quick_figures_first_and_each_budgets_baseline_search_before_its_others():
    for sizes in (GPU, SMOKE):
        names = [s.name for s in sections(sizes)]
        assert names[:6] == ["teachers", "steptime", "loader", "jobs", "teacher-large", "step"] and names[-1] == "ablation"
        searches = [n for n in names if n.startswith("search-")]
        assert searches == [f"search-{b}-{s}" for b in sizes.budgets for s in sizes.samplers]
    assert GPU.budgets[0] == "2M"  # make search's default budget: the standard search's figure first


def test_every_finished_section_is_packed_at_once(tmp_path):
    """A call killed by the device's time limit still brings back the sections it finished."""


    from bench.gpu import Section, run_sections

    packed: list[list[str]] = []
    cfg = _config(tmp_path, 60)
    todo = [Section(n, 1.0, lambda _c: {"x": 1}, lambda _c, n=n: (f"gpu-{n}", "body")) for n in ("a", "b")]
    todo.insert(1, Section("c", 1.0, lambda _c: None, lambda _c: ("gpu-c", "body"), resumable=True))  # cut short
    todo.insert(1, Section("long", 3600.0, lambda _c: {"x": 1}, lambda _c: ("gpu-long", "body")))  # no time: skipped
    done = run_sections(cfg, todo, force=False, log=lambda _l: None, after=lambda: packed.append(sorted(p.name for p in cfg.results.glob("*.json"))))
    # The sections after a skipped or cut-short one still run: a GPU call is too rare to end early.
    assert not done and packed == [["gpu_a.json"], ["gpu_a.json", "gpu_b.json"]]
    # A call whose only section was cut short is not done either (main then says to run it again).
    assert not run_sections(cfg, [Section("d", 1.0, lambda _c: None, lambda _c: ("gpu-d", "body"), resumable=True)], force=False, log=lambda _l: None)


def test_the_device_calls_fit_the_tool_and_the_lease():
    from bench.gpu import (
        CALL_OVERHEAD_S,
        CALL_SECONDS,
        MIN_SLICE,
        SECOND_CALL_SLACK_S,
        WARM_SECOND_CALL_S,
        device_calls,
    )

    lines = device_calls()
    first, again = (json.loads(line.removeprefix("run ")) for line in lines if line.startswith("run "))
    for call in (first, again):
        assert set(call) <= {"command", "timeout_s", "carry"}  # what the device tool's run takes
        assert len(call["command"]) <= 2000 and set(call["carry"]) == {".whl", ".data"}  # state travels committed (docs/results/gpu-state.tar.gz)
    assert CALL_SECONDS < first["timeout_s"] <= 600 and "--call-seconds" not in first["command"]
    # The second call on the machine still warm: its clock is its timeout less what a call spends
    # outside the bench, and it is made only where a resumable section can start in it.
    assert again["timeout_s"] == "<T>" and f"--call-seconds <T-{CALL_OVERHEAD_S:.0f}>" in again["command"]
    assert WARM_SECOND_CALL_S - SECOND_CALL_SLACK_S - CALL_OVERHEAD_S >= MIN_SLICE and f"{WARM_SECOND_CALL_S:.0f} s or more" in "".join(lines)
    # Extract, then the second call, then give the machine back: in that order, none before the first call's extract.
    order = [i for i, line in enumerate(lines) if line.startswith(("run ", "tar xzf", "give_back"))]
    assert [lines[i].split()[0] for i in order] == ["run", "tar", "run", "give_back"]


def test_the_device_command_installs_the_wheels_once_per_machine(tmp_path):
    """A second call on a warm machine skips the install (its marker is there); a fresh machine
    installs, and a failed install leaves no marker, so the next call tries again."""
    from bench.gpu import WHEELS_DONE, WHEELS_PIP, device_command

    site = tmp_path / "site"
    log = tmp_path / "installs"
    fake_pip = f"mkdir -p {site} && echo x >> {log} && test ! -f {tmp_path / 'broken'}"
    command = device_command().replace(WHEELS_PIP, fake_pip).replace(WHEELS_DONE, str(site / ".done"))
    command = command.split(" && python3 -m bench.gpu")[0]  # the install part
    (tmp_path / "broken").write_text("")
    assert subprocess.run(["bash", "-c", command], cwd=tmp_path).returncode != 0 and not (site / ".done").exists()
    (tmp_path / "broken").unlink()
    for _ in range(3):
        assert subprocess.run(["bash", "-c", command], cwd=tmp_path).returncode == 0
    assert log.read_text().count("x") == 2  # the failed install and the first good one; then skipped


def test_the_ship_line_names_the_file_the_ship_command_would_train():
    """`make gpu-prep` ships the teachers section's file: it must be the reconstruction-trained
    resnet20 that `nas-kd teacher --preset standard --reconstruction --seed 0` caches."""
    from bench.gpu import SHIP_COMMAND, device_calls, shipped_teacher_file
    from nas_kd.config import get_preset
    from nas_kd.models.teachers import teacher_key

    assert shipped_teacher_file() == f"{teacher_key('fashion-mnist', 'resnet20', get_preset('standard').teacher, 0, True)}.pt"
    for part in ("nas-kd teacher", "--preset standard", "--reconstruction", "--seed 0"):
        assert part in SHIP_COMMAND
    assert any(shipped_teacher_file() in line and "ship_teacher.py" in line for line in device_calls())


def test_kernel_time_counts_each_kernel_once():
    """A CUDA profile lists a kernel's time on the kernel's own row and again as the self device
    time of the op that launched it (and of a record_function range around it): only the kernel
    rows count, or the device-busy share comes out at 150-250%."""
    from types import SimpleNamespace

    from torch.autograd import DeviceType

    from bench.gpu_step import kernel_seconds

    rows = [
        SimpleNamespace(key="aten::conv2d", device_type=DeviceType.CPU, self_device_time_total=300.0),
        SimpleNamespace(key="Optimizer.step#SGD.step", device_type=DeviceType.CUDA, self_device_time_total=50.0, is_user_annotation=True),
        SimpleNamespace(key="cudnn_conv_kernel", device_type=DeviceType.CUDA, self_device_time_total=300.0, is_user_annotation=False),
        SimpleNamespace(key="sgd_update_kernel", device_type=DeviceType.CUDA, self_device_time_total=50.0),
    ]
    assert kernel_seconds(rows) == 350.0 / 1e6


def test_a_failing_section_is_recorded_and_the_later_ones_still_run(tmp_path):
    """A bug in one section (an API the GPU machine's torch lacks, a CUDA error) must not cost a
    rare GPU call its other sections: the traceback goes to failures.log (packed), the call goes on."""


    from bench.gpu import FAILURES, Section, run_sections

    def broken(_cfg):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    cfg = _config(tmp_path, 60)
    todo = [Section("bad", 1.0, broken, lambda _c: ("gpu-bad", "body")), Section("good", 1.0, lambda _c: {"x": 1}, lambda _c: ("gpu-good", "body"))]
    lines: list[str] = []
    assert not run_sections(cfg, todo, force=False, log=lines.append)
    assert [p.name for p in (tmp_path / "results").glob("*.json")] == ["gpu_good.json"]  # not recorded as done
    log = (tmp_path / FAILURES).read_text()
    assert "section bad" in log and "illegal memory access" in log and "def broken" not in log and "in broken" in log
    assert any("bad FAILED" in line for line in lines)


def test_force_redoes_a_finished_section_and_a_resumable_one_starts_on_a_slice_of_its_estimate(tmp_path, monkeypatch):
    """What decides whether a section runs in a call: FORCE=1 runs a finished one again; a
    resumable section (it keeps what it finishes) starts with MIN_SLICE left even when its whole
    estimate is far more, where a section that is not resumable waits for a longer call. And a
    failed section frees the device's cached memory for the ones after it."""
    import time

    import bench.gpu as gpu
    from bench.gpu import MIN_SLICE, Section, run_sections

    ran: list[str] = []

    def section(name, estimate, resumable=False):
        return Section(name, estimate, lambda _c: ran.append(name) or {"x": 1}, lambda _c: (f"gpu-{name}", "body"), resumable=resumable)

    cfg = _config(tmp_path, MIN_SLICE + 60)
    todo = [section("long", 10 * MIN_SLICE), section("sliced", 10 * MIN_SLICE, resumable=True)]
    assert not run_sections(cfg, todo, force=False, log=lambda _l: None)
    assert ran == ["sliced"]
    # A resumable section whose whole estimate is under MIN_SLICE needs only its estimate.
    short = dataclasses.replace(cfg, deadline=time.monotonic() + MIN_SLICE / 2)
    assert run_sections(short, [section("small", MIN_SLICE / 4, resumable=True)], force=False, log=lambda _l: None) and ran == ["sliced", "small"]
    done = [section("done", 1.0)]
    assert run_sections(cfg, done, force=False, log=lambda _l: None) and ran == ["sliced", "small", "done"]
    assert run_sections(cfg, done, force=False, log=lambda _l: None) and ran == ["sliced", "small", "done"]  # finished: skipped
    assert run_sections(cfg, done, force=True, log=lambda _l: None) and ran == ["sliced", "small", "done", "done"]
    freed = []
    monkeypatch.setattr(gpu.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(gpu.torch.cuda, "empty_cache", lambda: freed.append(True))
    monkeypatch.setattr(gpu, "hardware", lambda: "a GPU")
    bad = Section("bad", 1.0, lambda _c: 1 / 0, lambda _c: ("gpu-bad", ""))
    assert not run_sections(cfg, [bad], force=False, log=lambda _l: None) and freed == [True]


def test_a_call_with_a_failed_section_packs_the_failure_and_exits_nonzero(tmp_path, monkeypatch):
    import bench.gpu as gpu

    real = gpu.sections

    def with_a_bug(sizes):
        return [gpu.Section("bad", 1.0, lambda _c: 1 / 0, lambda _c: ("gpu-bad", "")), *[s for s in real(sizes) if s.name == "loader"]]

    monkeypatch.setattr(gpu, "sections", with_a_bug)
    monkeypatch.chdir(tmp_path)
    target = tmp_path / "pack.tar.gz"
    assert gpu.main(["--smoke", "--work", str(tmp_path / "w"), "--pack", str(target)]) == 1
    with tarfile.open(target) as tar:
        names = tar.getnames()
    assert any(n.endswith("gpu_loader.json") for n in names) and any(n.endswith(gpu.FAILURES) for n in names), names
    # The next call (here, one with nothing failing) keeps the log, which is no failure of its own.
    failures = tmp_path / "w" / gpu.FAILURES
    os.utime(failures, (failures.stat().st_atime, failures.stat().st_mtime - 60))
    monkeypatch.setattr(gpu, "sections", lambda sizes: [s for s in real(sizes) if s.name == "loader"])
    assert gpu.main(["--smoke", "--work", str(tmp_path / "w"), "--pack", str(target)]) == 0 and failures.is_file()


def test_without_a_gpu_the_full_bench_refuses_before_running_anything(tmp_path, monkeypatch, capsys):
    """The GPU sizes on a CPU would take days and write CPU figures into the GPU sections."""
    import bench.gpu as gpu

    ran = []
    monkeypatch.setattr(gpu, "sections", lambda sizes: [gpu.Section("x", 1.0, lambda _c: ran.append(1), lambda _c: ("gpu-x", ""), resumable=True)])
    assert gpu.main(["--work", str(tmp_path / "w"), "--device", "cpu"]) == 2 and ran == []
    assert "no GPU here" in capsys.readouterr().out and not (tmp_path / "w").exists()


def test_a_bare_machine_resumes_from_the_state_archive_before_any_section_runs(tmp_path, monkeypatch):
    """Each GPU session starts on a bare machine: what an earlier call kept reaches the sections
    only through the state archive in the results (committed), unpacked first."""
    import bench.gpu as gpu

    work, seen = tmp_path / "w", []

    def keeps(cfg):
        (cfg.work / "step").mkdir(parents=True, exist_ok=True)
        (cfg.work / "step" / "breakdown.json").write_text('{"kept": 1}')
        cfg.checkpoint()
        return None  # cut short by the call's end

    def reads(cfg):
        kept = cfg.work / "step" / "breakdown.json"
        seen.append(kept.read_text() if kept.is_file() else None)
        return None

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(gpu, "sections", lambda sizes: [gpu.Section("step", 1.0, keeps, lambda _c: ("gpu-step", ""), resumable=True)])
    assert gpu.main(["--smoke", "--work", str(work), "--pack", str(tmp_path / "p.tar.gz")]) == 0
    shutil.rmtree(work / "step")  # the next machine has the committed results only
    monkeypatch.setattr(gpu, "sections", lambda sizes: [gpu.Section("step", 1.0, reads, lambda _c: ("gpu-step", ""), resumable=True)])
    assert gpu.main(["--smoke", "--work", str(work)]) == 0
    assert seen == ['{"kept": 1}']


def test_a_piece_kept_inside_a_section_is_packed_before_the_section_ends(tmp_path, monkeypatch):
    """The device kills a command at its limit, and then no `finally` runs: a step part (or jobs
    row, or ablation run) kept before the kill must already be in the pack, not only whole
    sections. A teacher cache being shared, or a half-written file, never goes into it."""
    import bench.gpu as gpu
    from nas_kd.distill.shared_cache import CACHE_FILE

    target, seen = tmp_path / "pack.tar.gz", {}

    def section(cfg):
        (cfg.work / "step").mkdir(parents=True, exist_ok=True)
        (cfg.work / "step" / "breakdown.json").write_text("{}")
        study = cfg.work / "runs" / "gpu_search"
        study.mkdir(parents=True, exist_ok=True)
        (study / "study.db").write_text("db")
        (study / CACHE_FILE).write_text("4.5 GiB of teacher outputs")
        (study / "kept-run.pt.part").write_text("half")
        teachers = cfg.work / "runs" / "teachers"
        teachers.mkdir(parents=True, exist_ok=True)
        (teachers / cfg.sizes.teacher_file()).write_text("the teacher the sections distil from")
        cfg.checkpoint()
        with tarfile.open(target) as tar, tarfile.open(fileobj=tar.extractfile(f"w/results/{gpu.STATE}")) as state:
            seen["state"], seen["pack"] = sorted(state.getnames()), tar.getnames()
        return None  # cut short: the call goes on to its end

    monkeypatch.setattr(gpu, "sections", lambda sizes: [gpu.Section("step", 1.0, section, lambda _c: ("gpu-step", ""), resumable=True)])
    monkeypatch.chdir(tmp_path)
    assert gpu.main(["--smoke", "--work", str(tmp_path / "w"), "--pack", str(target)]) == 0
    assert seen["state"] == ["runs/gpu_search/study.db", "step/breakdown.json"]  # no teacher: it travels in the pack alone
    assert f"w/runs/teachers/{SMOKE.teacher_file()}" in seen["pack"]  # the file to ship, if it beats the shipped one


def test_jobs_keeps_each_value_it_measured_and_a_later_call_measures_only_the_rest(tmp_path, monkeypatch):
    """The first GPU call ran the jobs section past the device's limit and kept nothing. Here a call
    with time for --jobs 2 (14 s estimated) but not --jobs 1 (20 s) measures 2, keeps its row and
    returns None; the next call measures 1 alone and reports both, in the sizes' order."""
    import dataclasses

    from bench.gpu import Config, _state_files
    from bench.gpu_sections import jobs

    monkeypatch.chdir(tmp_path)
    # ce, not the quick preset's kd: the searches must train in the section's mode, not the preset's.
    sizes = dataclasses.replace(SMOKE, brief_trial_s=10.0, process_start_s=0.0, jobs_variants=(), jobs_mode="ce")
    assert (sizes.jobs_estimate(1), sizes.jobs_estimate(2)) == (20.0, 14.0)

    packed = []

    def call(seconds: float) -> Config:
        return _config(tmp_path, seconds, sizes=sizes, checkpoint=lambda: packed.append(sorted(p.name for p in (tmp_path / "jobs").glob("*.json"))))

    cfg = call(17.0)
    assert jobs(cfg) is None
    assert sorted(p.name for p in (tmp_path / "jobs").glob("*.json")) == ["2.json"]
    assert packed == [["2.json"]]  # packed as soon as the row was kept
    assert tmp_path / "jobs" / "2.json" in _state_files(cfg)  # it travels to the next GPU session
    kept = (tmp_path / "jobs" / "2.json").read_text()
    # What an earlier call killed inside --jobs 1 left: its search is timed from an empty study again.
    leftover = tmp_path / "runs" / "gpu_jobs1"
    leftover.mkdir(parents=True)
    (leftover / "left-by-a-killed-call").write_text("")
    result = jobs(call(1000.0))
    assert not (leftover / "left-by-a-killed-call").exists()
    assert [r["jobs"] for r in result["rows"]] == [1, 2] and all(r["trained"] == sizes.jobs[1] for r in result["rows"])
    assert (tmp_path / "jobs" / "2.json").read_text() == kept  # not measured again
    assert {json.loads((tmp_path / "runs" / f"gpu_jobs{n}" / "config.json").read_text())["mode"]["name"] for n in (1, 2)} == {"ce"}
    assert "**Mode ce, brief schedule" in result["markdown"]
    assert "| 2 | 2 |" in result["markdown"] and "x the trials per hour of `--jobs 1`" in result["markdown"]
    from bench.gpu_choice import DEFAULT

    # Rows of the brief schedule with crops (Sizes.jobs_brief), not the searches' own: the defaults stand.
    assert f"- The searches and the ablation of this bench train at {DEFAULT.why}" in result["markdown"]


def test_the_profile_says_which_part_of_the_step_dispatches_what():
    """A full step profiled on the CPU: every part of the step (the ranges DistillStep names) shows
    its own aten ops, the discriminators' update and the student's update included, and together
    with "other" they account for every op called from Python. A step without the ranges would
    put everything under "other"."""
    from torch.profiler import ProfilerActivity, profile

    from bench.gpu_step import per_part
    from nas_kd.distill.step import PARTS
    from tests.test_distill_step import batch, make

    step, _, _ = make("full")
    x, y = batch()
    step(x, y)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(2):
            step(x, y)
    parts = per_part(prof.events(), 2)
    assert set(parts) == {*PARTS, "other"}
    assert all(parts[p]["aten_ops"] > 0 for p in PARTS), parts
    assert parts["student_update"]["aten_ops"] > parts["forward"]["aten_ops"]  # backward and SGD outweigh the forward
    top_level = sum(1 for e in prof.events() if e.name.startswith("aten::") and not (e.cpu_parent is not None and e.cpu_parent.name.startswith("aten::")))
    assert sum(p["aten_ops"] for p in parts.values()) * 2 == top_level
    assert all(p["kernel_launches"] == 0 for p in parts.values())  # no CUDA here


def test_a_failing_jobs_value_does_not_cost_the_others(tmp_path, monkeypatch):
    """A search that fails at --jobs 1 (a CUDA error, say) must not stop --jobs 2 in the same
    call: its row is kept, and the section fails naming the value that did."""

    import pytest

    import nas_kd.search
    from bench.gpu_sections import jobs
    from nas_kd.device import step_options

    monkeypatch.chdir(tmp_path)
    real = nas_kd.search.run_search

    def failing_at_one(opts, **kw):
        if opts.jobs == 1:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return real(opts, **kw)

    monkeypatch.setattr(nas_kd.search, "run_search", failing_at_one)
    cfg = _config(tmp_path, 1000)
    before = step_options()
    with pytest.raises(RuntimeError, match="--jobs 1: RuntimeError: CUDA error"):
        jobs(cfg)
    assert sorted(p.name for p in (tmp_path / "jobs").glob("*.json")) == ["2-graph-1-preset-brief.json", "2-mps-1-preset-brief.json", "2.json"]  # every other search kept
    # The graph=1 row's search ran in this process and set its switches: they do not outlive it
    # (the step section after it would time graphed steps as its eager ones).
    assert step_options() == before


def test_a_jobs_record_without_a_newly_asked_value_is_not_done(tmp_path):
    """The recorded jobs section measured --jobs 1 and 4; asking for more rows reopens it (the
    kept rows of 1 and 4 are not measured again: the test above), and --plan counts it as to do."""


    from bench.gpu import plan_lines, recorded

    cfg = _config(tmp_path, 10, sizes=GPU, results=tmp_path)
    sec = next(s for s in sections(GPU) if s.name == "jobs")
    now = [JobsRun(4, brief=""), JobsRun(4, "graph=1", ""), JobsRun(8, brief=""), JobsRun(8, "graph=1", ""), JobsRun(8, "mps=1", "")]
    assert GPU.jobs_runs() == [JobsRun(1), JobsRun(4), *(dataclasses.replace(r, mode="kd") for r in now)]  # the search as it trains now: the preset's mode

    def record(runs):
        (tmp_path / "gpu_jobs.json").write_text(json.dumps({"seconds": 300.0, "result": {"rows": [{"jobs": r.jobs, "gpu_step": r.gpu_step, "brief": r.brief, "mode": r.mode} for r in runs]}}))

    (tmp_path / "gpu_jobs.json").write_text(json.dumps({"seconds": 300.0, "result": {"rows": [{"jobs": 1}, {"jobs": 4}]}}))  # as recorded 2026-12-04
    assert recorded(cfg, sec) is None and any(line.startswith("jobs") and "to do" in line for line in plan_lines(cfg, [sec]))
    record([JobsRun(1), JobsRun(4), JobsRun(4, brief=""), JobsRun(8, brief="")])
    assert recorded(cfg, sec) is None  # the graph variant is still owed
    record([JobsRun(1), JobsRun(4), JobsRun(8), JobsRun(4, "graph=1")])
    assert recorded(cfg, sec) is None  # rows of the kept brief schedule do not stand for the preset's
    record([JobsRun(1), JobsRun(4), *now])
    assert recorded(cfg, sec) is None  # rows of the preset's brief in the kept rows' mode (full) do not stand for its mode's
    record(GPU.jobs_runs())
    assert recorded(cfg, sec)["seconds"] == 300.0 and "done" in plan_lines(cfg, [sec])[0]


def test_the_plan_counts_only_what_a_resumable_section_has_not_kept(tmp_path):
    """--plan reads the state archive: with the --jobs 1 and 4 rows and the step's breakdown kept
    (as after 2026-12-04), jobs and step are estimated for what is left, not from scratch."""


    from bench.gpu import STATE, _write_tar, kept_state, plan_lines

    cfg = _config(tmp_path, 10, sizes=GPU, results=tmp_path)
    todo = [s for s in sections(GPU) if s.name in ("step", "jobs")]
    whole = {line.split()[0]: float(line.split()[3]) for line in plan_lines(cfg, todo)[:2]}
    kept, row = tmp_path / "k.json", tmp_path / "row.json"
    kept.write_text("{}")
    row.write_text(json.dumps({"jobs": 1, "brief": "crop=1", "trained": 5, "trials_per_minute": 1.0, "mean_train_seconds": 40.0}))
    _write_tar(tmp_path / STATE, [(row, "jobs/1.json"), (row, "jobs/4.json"), (kept, "step/breakdown.json")])
    left = {line.split()[0]: float(line.split()[3]) for line in plan_lines(cfg, todo)[:2]}
    assert abs(left["jobs"] - (GPU.jobs_estimate(4) + GPU.jobs_estimate(4) + GPU.jobs_estimate(8) + GPU.jobs_estimate(8) + GPU.jobs_estimate(8))) < 1 and left["jobs"] < whole["jobs"]  # printed to the second
    assert left["step"] == whole["step"] - GPU.step.part_estimate("breakdown")
    # The call count: the pieces left, each whole, in calls of what a call holds less its margin.
    from bench.gpu import CALL_SECONDS, calls_for

    for sizes in (GPU, dataclasses.replace(GPU, margin_s=200.0)):  # the second: a margin that tells for sure
        every = sections(sizes)
        wide = _config(tmp_path, 10, sizes=sizes, results=tmp_path)
        pieces = [u for sec in every for u in sec.left(kept_state(wide))]
        assert plan_lines(wide, every)[-1].split()[5] == str(calls_for(pieces, CALL_SECONDS - sizes.margin_s))
    assert calls_for(pieces, CALL_SECONDS - 200.0) != calls_for(pieces, CALL_SECONDS)


def test_a_search_without_baselines_is_estimated_without_their_runs():
    """Per budget only the first sampler's search retrains the uniform baselines; the others share them."""
    estimates = {s.name: s.estimate_s for s in sections(GPU)}
    assert estimates["search-2M-tpe"] == GPU.search_estimate(True) > estimates["search-2M-random"] == GPU.search_estimate(False)


def test_the_plan_counts_the_trials_a_kept_search_has_finished(tmp_path):
    """A search cut short by a call's end keeps its study: --plan estimates the trials it still
    lacks (trials that count towards the target only: a trial left by a dead worker does not)."""

    import optuna
    from optuna.trial import TrialState, create_trial

    from bench.gpu import STATE, _write_tar, plan_lines
    from bench.gpu_sections import search_study

    cfg = _config(tmp_path, 10, sizes=GPU, results=tmp_path)
    todo = [s for s in sections(GPU) if s.name == "search-2M-tpe"]
    whole = float(plan_lines(cfg, todo)[0].split()[3])
    db = tmp_path / "study.db"
    study = optuna.create_study(study_name=search_study(GPU, "2M", "tpe"), storage=f"sqlite:///{db}")
    for _ in range(3):
        study.add_trial(create_trial(state=TrialState.PRUNED))
    study.add_trial(create_trial(state=TrialState.FAIL))  # no reason recorded: a dead worker's, retried
    _write_tar(tmp_path / STATE, [(db, f"runs/{search_study(GPU, '2M', 'tpe')}/study.db")])
    left = float(plan_lines(cfg, todo)[0].split()[3])
    assert abs(left - (whole - GPU.search_trials_s * 3 / GPU.trials)) < 1  # printed to the second


def test_a_step_switch_row_is_paired_with_the_plain_row_on_the_same_students():
    """The graph's real trials are judged against the plain --jobs 4 trials of the same students
    (a graph that trained wrongly would show here, not in the speed columns)."""
    from bench.gpu_sections import _switch_pairs

    plain4 = {"jobs": 4, "gpu_step": None, "val_accuracy": {"a": 0.90, "b": 0.80, "c": 0.85, "x": 0.5}}
    plain8 = {"jobs": 8, "gpu_step": None, "val_accuracy": {"a": 0.10, "b": 0.10, "c": 0.10}}
    graph = {"jobs": 4, "gpu_step": "graph=1", "val_accuracy": {"a": 0.80, "b": 0.70, "c": 0.76, "y": 0.9}}
    (line,) = _switch_pairs([plain8, plain4, graph])
    assert "`--gpu-step graph=1` minus `--jobs 4` on the same 3 students" in line and "-9.67 points" in line and "(worse)" in line
    assert _switch_pairs([plain4, {**graph, "val_accuracy": {"a": 0.9}}]) == []  # one student in common: no interval
    # A row in another mode trains other accuracies: never the plain row a switch is judged against.
    kd_plain = {**plain4, "mode": "kd", "val_accuracy": {"a": 0.80, "b": 0.70, "c": 0.76}}
    (line,) = _switch_pairs([plain4, kd_plain, {**graph, "mode": "kd"}])
    assert "+0.00 points" in line
    assert _switch_pairs([plain4, {**graph, "mode": "kd"}]) == []


def test_a_jobs_run_in_another_mode_is_kept_and_trained_apart():
    from dataclasses import replace

    run, kd = JobsRun(4, brief=""), JobsRun(4, brief="", mode="kd")
    assert run.key() == "4-preset-brief" and kd.key() == "4-preset-brief-kd"
    assert JobsRun.of_row({"jobs": 4, "gpu_step": None, "brief": "", "mode": "kd"}) == kd
    assert JobsRun.of_row({"jobs": 4}) == JobsRun(4)  # rows kept before runs had a mode
    sizes = replace(GPU, jobs_mode="full")
    assert sizes.jobs_mode_of(run) == "full" and sizes.jobs_mode_of(kd) == "kd"


def test_a_kept_search_study_made_with_other_settings_starts_over(tmp_path, monkeypatch):
    """A study kept from an earlier session whose settings this version would refuse (a preset's
    brief schedule changed) is started afresh, not resumed into a refusal that fails the section
    every call; a study with the same settings is kept."""
    import dataclasses

    import optuna
    import torch

    from bench.gpu_sections import start_over_if_changed
    from nas_kd.config import Schedule
    from nas_kd.models.teachers import ensure_teacher
    from nas_kd.plan import PLAN_ATTR, SearchOptions, build_plan
    from nas_kd.search import bind_teacher

    monkeypatch.chdir(tmp_path)
    tiny = Schedule(epochs=1, batch_size=64, lr=0.05, warmup_epochs=0.0, train_subset=256)
    teacher = ensure_teacher("synthetic", "resnet8", tiny, preset="test", device=torch.device("cpu"), root=tmp_path / "teachers", log=lambda *_: None)[2]
    opts = SearchOptions(space=str(ROOT / "search_spaces" / "mbv2.yaml"), dataset="synthetic", preset="quick", baselines=False, study="kept", teacher=str(teacher))
    folder = tmp_path / "runs" / "kept"
    folder.mkdir(parents=True)
    study = optuna.create_study(study_name="kept", storage=f"sqlite:///{folder / 'study.db'}")
    # As a search stores it: bound to its teacher's file (SHA-256 and seed are settings).
    stored = bind_teacher(build_plan(opts), torch.device("cpu"), log=lambda _l: None)[0]
    assert stored.teacher.sha256 is not None
    study.set_user_attr(PLAN_ATTR, stored.to_dict())
    lines = []
    assert not start_over_if_changed(opts, log=lines.append) and (folder / "study.db").is_file()
    assert not start_over_if_changed(dataclasses.replace(opts, trials=50), log=lines.append)  # not a setting: resumes
    assert lines == []
    assert start_over_if_changed(dataclasses.replace(opts, brief="crop=1"), log=lines.append)
    assert not folder.exists() and len(lines) == 1 and "brief" in lines[0]
    assert not start_over_if_changed(opts, log=lines.append) and len(lines) == 1  # no kept study: nothing started over


def test_the_jobs_rows_keep_the_brief_schedule_they_were_first_measured_with():
    """The --jobs 1 and 4 rows kept in the state archive (sessions 15-16) trained the standard brief
    schedule with crops; the rows still to measure must train the same, whatever the preset's now."""
    from nas_kd.config import Schedule, get_preset, parse_schedule_overrides

    jobs_brief = get_preset(GPU.preset).brief.replace(**parse_schedule_overrides(GPU.jobs_brief, "--brief"))
    assert jobs_brief == Schedule(epochs=3, batch_size=256, lr=0.2, warmup_epochs=0.5, crop=True)
    # Which a run trains: the kept rows' schedule unless it names its own; brief="" is the preset's as it is.
    assert GPU.jobs_brief_of(JobsRun(1)) == GPU.jobs_brief == "crop=1"
    assert GPU.jobs_brief_of(JobsRun(4, brief="")) is None and GPU.jobs_brief_of(JobsRun(4, brief="epochs=2")) == "epochs=2"
    assert {GPU.jobs_brief_of(r) for r in GPU.jobs_variants} == {None}  # the variants time the search as it trains now


def test_the_plan_does_not_count_a_kept_study_made_with_another_brief_schedule_or_teacher(tmp_path):
    """Such a study is started over by its section (start_over_if_changed): its trials are owed."""

    import optuna
    from optuna.trial import TrialState, create_trial

    from bench.gpu import STATE, _write_tar, plan_lines
    from bench.gpu_sections import search_study
    from nas_kd.config import get_preset
    from nas_kd.plan import PLAN_ATTR, SearchOptions, build_plan

    cfg = _config(tmp_path, 10, sizes=GPU, results=tmp_path)
    todo = [s for s in sections(GPU) if s.name == "search-2M-tpe"]
    whole = float(plan_lines(cfg, todo)[0].split()[3])
    name = search_study(GPU, "2M", "tpe")

    def kept_with(brief, full=None, teacher_sha256=None) -> float:
        db = tmp_path / "study.db"
        db.unlink(missing_ok=True)
        study = optuna.create_study(study_name=name, storage=f"sqlite:///{db}")
        plan = build_plan(SearchOptions(space=str(ROOT / GPU.space), dataset="synthetic", preset=GPU.preset, baselines=False, study=name)).to_dict()
        plan["preset"]["brief"] = brief.to_dict()  # as a study made when the preset had this brief stores it
        plan["teacher"]["sha256"] = teacher_sha256  # the teacher file it distilled from (None: unbound)
        if full is not None:
            plan["preset"]["full"] = full.to_dict()
        study.set_user_attr(PLAN_ATTR, plan)
        for _ in range(3):
            study.add_trial(create_trial(state=TrialState.COMPLETE, value=0.5))
        _write_tar(tmp_path / STATE, [(db, f"runs/{name}/study.db")])
        return float(plan_lines(cfg, todo)[0].split()[3])

    today = get_preset(GPU.preset).brief
    assert kept_with(today) < whole  # the same brief: its trials are kept
    assert kept_with(today.replace(crop=not today.crop)) == whole  # another: all owed again
    # Another full schedule alone leaves the trials' values as they were (a study's settings hold
    # the brief schedule, not the full one): the section resumes such a study, so they are kept.
    full = get_preset(GPU.preset).full
    assert kept_with(today, full.replace(epochs=full.epochs + 1)) < whole
    # A study that distilled from another teacher than the shipped one the searches use is started
    # over too (start_over_if_changed: the teacher's SHA-256 is a setting); from the same, kept.
    from bench.gpu import searches_teacher_sha256
    from nas_kd.models.shipped import shipped_teacher

    shipped = shipped_teacher(GPU.dataset).sha256
    assert searches_teacher_sha256(GPU) == shipped and searches_teacher_sha256(SMOKE) is None
    assert kept_with(today, teacher_sha256=shipped) < whole == kept_with(today, teacher_sha256="0" * 64)


def test_every_piece_a_call_must_hold_whole_fits_one():
    """A run, trial, part or row cut off at a call's end is lost: one that cannot fit a call with
    its margin would stop its section for good. (Until session 28 an ablation run was planned at
    670 s and a search's whole re-screen and retrain, 1,680 s, had to fit one call of 540 s: none
    of the five could ever have finished.)"""
    from bench.gpu import CALL_SECONDS

    for name, seconds in GPU.units():
        assert seconds + GPU.margin_s <= CALL_SECONDS, (name, seconds)
    assert {"finish run", "ablation run", "search trial", "step batch", "teachers"} <= {name for name, _ in GPU.units()}


def test_kept_pieces_are_counted_in_their_own_folder_only():
    """The plan counts a section's kept pieces by folder: files directly in it with the suffix,
    less the one named (the ablation's timing file), not those of a sub-folder or of a folder
    whose name merely starts the same (the ablation's teacher-outputs folder)."""
    from bench.gpu import Kept

    kept = Kept(frozenset({"ablation/kd_small_0.json", "ablation/timing.json", "ablation/old/kd_small_1.json", "ablation-teacher/x.json", "ablation/kd_small_2.pt"}), None)
    assert kept.under("ablation", ".json", but="timing.json") == ["ablation/kd_small_0.json"]
    assert sorted(kept.under("ablation", ".json")) == ["ablation/kd_small_0.json", "ablation/timing.json"]
    assert kept.finished_trials("runs/s/study.db") == 0  # no archive: nothing kept


def test_calls_hold_whole_pieces_in_order():
    from bench.gpu import calls_for, waves

    assert calls_for([], 495) == 0 and calls_for([495], 495) == 1
    assert calls_for([300, 300, 100], 495) == 2  # the second 300 waits for a call of its own; the 100 joins it
    assert calls_for([100, 395, 100], 495) == 2 and calls_for([100, 400, 100], 495) == 3
    assert waves(19, 4, 336.0) == [336.0] * 5 and waves(0, 4, 1.0) == [] and waves(-2, 4, 1.0) == []


def test_an_ablation_plans_each_run_on_its_own_mode_and_students_time(tmp_path):
    """The first run to finish (a `ce` run: a third of a `full` one) must not set the plan of
    the runs not yet timed; what was timed travels to the next call."""
    from bench.gpu_sections import AblationTiming

    path = tmp_path / "timing.json"
    from pytest import approx

    timing = AblationTiming(path, 400.0)
    ce, full = {"mode": "ce", "student": "small"}, {"mode": "full", "student": "small"}
    assert timing.plan(ce) == approx(400.0) and timing.plan(full) == approx(400.0)
    timing.took(ce, 100.0)
    assert timing.plan(ce) == approx(110.0) and timing.plan(full) == approx(400.0)
    timing.took(full, 500.0)
    assert timing.plan(full) == approx(550.0) and timing.plan({"mode": "kd", "student": "small"}) == approx(550.0)  # the longest timed, over the estimate
    timing.took(ce, 90.0)  # the longest of a key's runs counts
    again = AblationTiming(path, 400.0)
    assert again.plan(ce) == approx(110.0) and again.plan(full) == approx(550.0)


def test_the_plan_counts_the_finish_runs_and_ablation_runs_kept(tmp_path):


    from bench.gpu import STATE, _write_tar, plan_lines
    from bench.gpu_sections import search_study

    cfg = _config(tmp_path, 10, sizes=GPU, results=tmp_path)
    todo = [s for s in sections(GPU) if s.name in ("search-2M-tpe", "ablation")]
    whole = {line.split()[0]: float(line.split()[3]) for line in plan_lines(cfg, todo)[:2]}
    kept = tmp_path / "k"
    kept.write_text("{}")
    runs = f"runs/{search_study(GPU, '2M', 'tpe')}/final/runs"
    members = [(kept, f"{runs}/r{i}.pt") for i in range(2 * GPU.processes)] + [(kept, f"ablation/r{i}.json") for i in range(GPU.ablation_jobs)] + [(kept, "ablation/timing.json")]
    _write_tar(tmp_path / STATE, members)
    left = {line.split()[0]: float(line.split()[3]) for line in plan_lines(cfg, todo)[:2]}
    assert abs(left["search-2M-tpe"] - (whole["search-2M-tpe"] - 2 * GPU.finish_run_estimate())) < 1
    assert abs(left["ablation"] - (whole["ablation"] - GPU.ablation_run_s)) < 1  # one wave of 8 kept; timing.json is no run


def test_a_search_finish_is_counted_as_finalize_trains_it():
    """The runs after a search's trials: its re-screen (the brief top 3 and the baseline), then on
    every retrain seed the winner, and, where the search trains the baselines, the uniform baseline
    in the search's mode and in ce (nas_kd.finalize)."""
    from nas_kd.config import get_preset

    rescreen = get_preset(GPU.preset).rescreen + 1
    assert GPU.finish_runs(True) == rescreen + 3 * GPU.retrain_seeds == 19  # the "some 19 full-schedule runs" of bench/gpu_sizes.py
    assert GPU.finish_runs(False) == rescreen + GPU.retrain_seeds


def test_the_estimates_count_the_process_start_whole_waves_and_sharing():
    """An estimate too low starts work a call cannot finish (lost device time): a --jobs N search
    pays its processes' start, then its trials in waves of N (the last one whole, however few it
    holds), each slowed by sharing the device when N > 1; a finish run shares it with the others."""
    from bench.gpu_sizes import SHARE

    trials = GPU.jobs[1]
    assert GPU.jobs_estimate(1) == GPU.process_start_s + trials * GPU.brief_trial_s
    assert GPU.jobs_estimate(3) == GPU.process_start_s + -(-trials // 3) * GPU.brief_trial_s * SHARE and trials % 3
    assert GPU.processes > 1 and GPU.finish_run_estimate() == GPU.full_run_s * SHARE
    assert dataclasses.replace(GPU, processes=1).finish_run_estimate() == GPU.full_run_s


def test_a_search_whose_finish_does_not_fit_a_call_goes_on_in_the_next(tmp_path, monkeypatch):
    """The re-screen and retrain of a search are spread over calls: none starts where it could
    not end inside the call (nothing is filled or trained for it), the next call trains them,
    and what each call spent is summed into the search's time."""

    import torch

    import bench.gpu_sections as s
    from nas_kd.finalize import FINAL_DIR, RUNS_DIR

    monkeypatch.chdir(tmp_path)
    cfg = _config(tmp_path, 600)
    budget, sampler = SMOKE.budgets[0], SMOKE.samplers[0]
    folder = tmp_path / "runs" / s.search_study(SMOKE, budget, sampler)
    real = s.finish_run_seconds
    monkeypatch.setattr(s, "finish_run_seconds", lambda study, sizes, setup: 10_000.0)  # a run longer than the call
    assert s.search(budget, sampler)(cfg) is None
    assert not (folder / FINAL_DIR).exists() and (folder / s.FINISH_FILE).is_file()
    assert real(folder.name, SMOKE) == SMOKE.finish_run_estimate()  # nothing timed yet: the estimate
    monkeypatch.setattr(s, "finish_run_seconds", real)
    (folder / s.FINISH_FILE).write_text(json.dumps({"seconds": 1000.0}))  # as if earlier calls had spent 1000 s on it
    result = s.search(budget, sampler)(cfg)
    assert result is not None and result["report"]["trial_counts"]["finished"] == SMOKE.trials
    kept = list((folder / FINAL_DIR / RUNS_DIR).glob("*.pt"))
    assert len(kept) == SMOKE.retrain_seeds * 3 or len(kept) == SMOKE.retrain_seeds * 2  # winner, baseline in its mode and ce (fewer if the winner is the baseline)
    timed = max(torch.load(p, weights_only=True)["record"]["train_seconds"] for p in kept)
    assert real(folder.name, SMOKE) >= s.RUN_MARGIN * timed + s.RUN_SETUP_S  # now planned on what was timed
    assert result["report"]["finish_seconds"] > json.loads((folder / s.FINISH_FILE).read_text())["seconds"] > 1000.0  # summed over the calls
