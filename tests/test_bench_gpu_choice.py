"""bench.gpu_choice: the searches and the ablation of `make bench-gpu` train at the fastest setup
the jobs section measured on their own brief schedule and mode, a step switch only where its
trials kept their accuracy (a graph only where it captured every trial); the plan's estimates
follow the choice."""

from __future__ import annotations

import dataclasses
import json

import pytest

from bench.gpu_choice import CAPTURED, DEFAULT, TRIAL_MARGIN, Setup, choose
from bench.gpu_sizes import GPU, SEARCH_MODE, SHARE, SMOKE

VAL = {"a": 0.90, "b": 0.80, "c": 0.85, "d": 0.88}  # four students' validation accuracy


def _row(jobs: int, tpm: float, gpu_step: str | None = None, brief: str | None = "", mode: str | None = SEARCH_MODE, val: dict | None = None, **more) -> dict:
    """A kept jobs row as the jobs section writes it (brief "" and the preset's mode: as the searches train)."""
    return {"jobs": jobs, "gpu_step": gpu_step, "brief": brief, "mode": mode, "wall_seconds": 100.0, "trained": 8, "trials_per_minute": tpm, "mean_train_seconds": 40.0 / tpm, "val_accuracy": dict(VAL if val is None else val), **more}


def test_without_a_row_of_the_searches_own_schedule_and_mode_the_defaults_stand():
    assert choose([], GPU) is DEFAULT
    assert choose([_row(4, 9.0, brief=None)], GPU) is DEFAULT  # the kept rows' cropped brief (Sizes.jobs_brief)
    assert GPU.mode == "kd" and GPU.jobs_mode == "full"  # the preset's default; the kept rows' mode
    assert choose([_row(4, 9.0, mode="full")], GPU) is DEFAULT  # the searches train in GPU.mode, kd
    assert choose([_row(4, 9.0, mode=None)], GPU) is DEFAULT  # no mode named: the kept rows' (jobs_mode)
    assert choose([{**_row(4, 9.0, mode="kd"), "trained": 0, "mean_train_seconds": None}], GPU) is DEFAULT
    assert choose([_row(4, 9.0, mode="kd")], GPU).jobs == 4  # naming the searches' mode counts


def test_every_search_as_it_trains_now_that_the_gpu_jobs_section_times_can_be_chosen():
    """The jobs section's variants are there to pick how the searches train: a row each writes
    (its run's brief and mode, as bench.gpu_sections.jobs keeps it) must count as the searches' own,
    in the preset's mode, or the choice stays at the defaults whatever they measure."""
    assert GPU.jobs_variants
    for run in GPU.jobs_variants:
        row = _row(run.jobs, 9.0, run.gpu_step, brief=run.brief, mode=run.mode, step_graph=[CAPTURED])
        plain = [] if run.gpu_step is None else [_row(run.jobs, 1.0, brief=run.brief, mode=run.mode)]
        assert choose([row, *plain], GPU).trials_per_minute == 9.0, run


def test_the_most_trials_per_minute_wins_and_a_tie_keeps_the_plain_step_and_fewer_processes():
    rows = [_row(4, 5.0), _row(8, 9.0), _row(1, 8.0, brief=None)]
    setup = choose(rows, GPU)
    assert (setup.jobs, setup.gpu_step, setup.trials_per_minute, setup.trial_s) == (8, None, 9.0, 40.0 / 9.0)
    assert "--jobs 8:" in setup.why and "(9.0, of 2 rows)" in setup.why
    captured = {"step_graph": [CAPTURED]}
    assert choose([_row(8, 9.0), _row(4, 9.0), _row(4, 9.0, "graph=1", **captured)], GPU).jobs == 4
    assert choose([_row(4, 9.0, "graph=1", **captured), _row(4, 9.0)], GPU).gpu_step is None


def test_a_graph_that_captured_every_trial_and_kept_its_accuracy_is_chosen():
    graph = _row(4, 20.0, "graph=1", val={k: v + (0.002 if i % 2 else -0.002) for i, (k, v) in enumerate(VAL.items())}, step_graph=[CAPTURED])
    setup = choose([_row(4, 5.0), _row(8, 9.0), graph], GPU)
    assert (setup.jobs, setup.gpu_step, setup.trial_s) == (4, "graph=1", 2.0)
    # A switch that graphs nothing (MPS) needs no capture, only the accuracy check.
    assert choose([_row(4, 5.0), _row(8, 9.0, "mps=1")], GPU).gpu_step == "mps=1"


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ({"step_graph": [CAPTURED, "eager: the step could not be captured"]}, "did not capture every trial (captured; eager: "),
        ({"step_graph": []}, "did not capture every trial (not recorded)"),
        ({"step_graph": [CAPTURED], "val_accuracy": {k: v - 0.05 - 0.001 * i for i, (k, v) in enumerate(VAL.items())}}, "validation accuracy fell -5.15 points"),
        ({"step_graph": [CAPTURED], "val_accuracy": {"x": 0.9, "y": 0.9}}, "no plain row shares two of its students"),
        ({"step_graph": [CAPTURED], "val_accuracy": {"a": 0.9, "y": 0.9}}, "no plain row shares two of its students"),
    ],
)
def test_a_faster_switch_is_refused_where_it_did_not_capture_or_lost_accuracy(change, said):
    rows = [_row(4, 5.0), {**_row(4, 20.0, "graph=1"), **change}]
    setup = choose(rows, GPU)
    assert (setup.jobs, setup.gpu_step) == (4, None)
    assert "; not --gpu-step graph=1 at --jobs 4: " in setup.why and said in setup.why


def test_the_defaults_estimate_as_the_sizes_do_and_a_measured_setup_from_its_row():
    from bench.gpu_sections import RUN_MARGIN, RUN_SETUP_S

    for sizes in (GPU, SMOKE):
        assert DEFAULT.trials_s(sizes) == sizes.search_trials_s and DEFAULT.trial_piece_s(sizes) == sizes.brief_trial_s * SHARE
        assert DEFAULT.full_run_s(sizes) == sizes.finish_run_estimate() and DEFAULT.ablation_run_s(sizes) == sizes.ablation_run_s
        assert (DEFAULT.processes(sizes), DEFAULT.search_jobs(sizes)) == (sizes.processes, sizes.search_jobs)
    setup = Setup(8, "graph=1", 6.0, 40.0, "measured")
    assert setup.trials_s(GPU) == 60.0 * GPU.trials / 40.0 and setup.trial_piece_s(GPU) == TRIAL_MARGIN * 6.0
    # The standard preset: 3 brief epochs, 20 full ones, both on every training example.
    assert setup.full_run_s(GPU) == pytest.approx(RUN_MARGIN * 6.0 / 3 * 20 + RUN_SETUP_S)
    assert setup.ablation_run_s(GPU) == setup.full_run_s(GPU)  # eight processes, as measured
    assert dataclasses.replace(setup, jobs=4).ablation_run_s(GPU) == pytest.approx(SHARE * setup.full_run_s(GPU))
    assert (setup.processes(GPU), setup.search_jobs(GPU)) == (8, 8)


def test_a_slow_measured_setup_never_plans_a_piece_no_call_holds():
    """A piece planned longer than a call would never start, so never be timed: the section would
    stop for good (session 28). Eager trials of 60 s would plan a full run at 430 s and an ablation
    run beside 7 others at 1.4 x that; each is held to a call."""
    from bench.gpu import CALL_SECONDS

    usable = CALL_SECONDS - GPU.margin_s
    for trial_s in (30.0, 60.0, 400.0):
        setup = Setup(4, None, trial_s, 60 * 4 / trial_s, "measured")
        pieces = [setup.trial_piece_s(GPU), setup.full_run_s(GPU), setup.ablation_run_s(GPU)]
        assert max(pieces) <= usable and (trial_s < 60 or max(pieces) == usable), pieces


def test_the_plan_estimates_the_searches_and_the_ablation_at_the_kept_rows_setup(tmp_path):
    from bench.gpu import STATE, _write_tar, plan_lines, sections
    from tests.test_bench_gpu import _config

    cfg = _config(tmp_path, 10, sizes=GPU, results=tmp_path)
    todo = [s for s in sections(GPU) if s.name in ("search-2M-tpe", "ablation")]

    def estimates() -> dict[str, float]:
        lines = plan_lines(cfg, todo)
        return {line.split()[0]: float(line.split()[3]) for line in lines[:2]} | {"at": lines[2], "calls": int(lines[3].split()[5])}

    before = estimates()
    assert "the product's defaults" in before["at"]
    rows = [_row(4, 5.0), _row(4, 30.0, "graph=1", step_graph=[CAPTURED])]
    members = []
    for i, row in enumerate(rows):
        path = tmp_path / f"r{i}.json"
        path.write_text(json.dumps(row))
        members.append((path, f"jobs/{i}.json"))
    _write_tar(tmp_path / STATE, members)
    after = estimates()
    setup = choose(rows, GPU)
    assert "--jobs 4 --gpu-step graph=1" in after["at"] and setup.gpu_step == "graph=1"
    finish = sum([setup.full_run_s(GPU)] * -(-GPU.finish_runs(True) // 4))
    assert after["search-2M-tpe"] == pytest.approx(setup.trials_s(GPU) + finish, abs=1)  # printed to the second
    assert after["ablation"] == pytest.approx(GPU.estimates["ablation"] * setup.ablation_run_s(GPU) / GPU.ablation_run_s, abs=1)
    assert after["search-2M-tpe"] < before["search-2M-tpe"] and after["calls"] < before["calls"]
    assert "the rest is kept" not in "".join(plan_lines(cfg, todo))  # nothing is kept: the whole estimate is at the setup


def _kept_rows(folder, rows) -> None:
    from bench.gpu_sections import JOBS_DIR

    (folder / JOBS_DIR).mkdir(parents=True, exist_ok=True)
    for i, row in enumerate(rows):
        (folder / JOBS_DIR / f"{i}.json").write_text(json.dumps(row))


@pytest.mark.parametrize("switch", ["check_every=3", "mps=1"])
def test_a_search_section_trains_at_the_chosen_setup_and_keeps_which(tmp_path, monkeypatch, switch):
    """The search's options carry the chosen --jobs and --gpu-step (an MPS setup runs its trials in
    a process of its own, as the jobs section timed it); the setup is kept in the study's folder
    and the process's step switches are the defaults again after the section."""
    import bench.gpu_sections as s
    import nas_kd.search
    from nas_kd.device import StepOptions, configure_step, parse_step_options, step_options
    from tests.test_bench_gpu import _config

    seen = []

    def trials(opts, finish=False):
        configure_step(parse_step_options(opts.gpu_step))  # as run_search does, for the whole process
        seen.append((opts.jobs, opts.gpu_step))
        return {"finished": SMOKE.trials - 1}

    monkeypatch.setattr(s, "start_over_if_changed", lambda opts, log=print: False)
    monkeypatch.setattr(nas_kd.search, "run_search", trials)
    monkeypatch.setattr(s, "_search_in_own_process", lambda opts: seen.append("own process") or trials(opts))
    monkeypatch.chdir(tmp_path)
    _kept_rows(tmp_path, [_row(1, 1.0, mode="kd"), _row(1, 2.0, switch, mode="kd")])  # SMOKE.mode: kd
    configure_step(StepOptions())
    budget, sampler = SMOKE.budgets[0], SMOKE.samplers[0]
    assert s.search(budget, sampler)(_config(tmp_path, 600)) is None
    assert seen == ([] if switch != "mps=1" else ["own process"]) + [(1, switch)]
    kept = json.loads((tmp_path / "runs" / s.search_study(SMOKE, budget, sampler) / s.SETUPS_FILE).read_text())
    assert [(k["jobs"], k["gpu_step"]) for k in kept] == [(1, switch)] and step_options() == StepOptions()


def test_a_search_finish_not_yet_timed_is_planned_at_the_setup(tmp_path, monkeypatch):
    import optuna

    from bench.gpu_sections import finish_run_seconds

    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "st").mkdir(parents=True)
    optuna.create_study(study_name="st", storage=f"sqlite:///{tmp_path / 'runs' / 'st' / 'study.db'}")
    setup = Setup(4, "graph=1", 2.0, 20.0, "measured")
    assert finish_run_seconds("st", GPU, setup) == setup.full_run_s(GPU) != finish_run_seconds("st", GPU) == GPU.finish_run_estimate()


def test_a_search_spread_over_calls_keeps_each_setup_it_trained_with(tmp_path, monkeypatch):
    from bench.gpu_sections import SETUPS_FILE, _note_setup

    monkeypatch.chdir(tmp_path)
    measured = Setup(4, "graph=1", 2.0, 20.0, "measured")
    assert [s["gpu_step"] for s in _note_setup("st", DEFAULT)] == [None]
    assert [s["gpu_step"] for s in _note_setup("st", DEFAULT)] == [None]  # the same again: said once
    assert [s["gpu_step"] for s in _note_setup("st", measured)] == [None, "graph=1"]
    assert len(json.loads((tmp_path / "runs" / "st" / SETUPS_FILE).read_text())) == 2


def test_ablation_workers_train_with_the_chosen_step_less_mps():
    import torch

    from bench.gpu_sections import _ablation_init
    from nas_kd.device import StepOptions, configure_step, step_options

    threads = torch.get_num_threads()
    try:
        _ablation_init(1, "cpu", "check_every=3,mps=1")
        assert step_options() == StepOptions(check_every=3)
        _ablation_init(1, "cpu", None)
        assert step_options() == StepOptions()
    finally:
        configure_step(StepOptions())
        torch.set_num_threads(threads)


def test_the_ablation_plans_its_runs_and_starts_its_workers_at_the_chosen_setup(tmp_path, monkeypatch, capsys):
    import bench.gpu_sections as s
    from tests.test_bench_gpu import _config

    pools = []

    class Pool:  # records how the workers would start; no run starts (no time for one)
        def __init__(self, **kwargs):
            pools.append(kwargs["initargs"])

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(s.cf, "ProcessPoolExecutor", Pool)
    monkeypatch.chdir(tmp_path)
    _kept_rows(tmp_path, [_row(1, 1.0, mode="kd"), _row(1, 2.0, "check_every=3", mode="kd")])
    setup = choose([_row(1, 1.0, mode="kd"), _row(1, 2.0, "check_every=3", mode="kd")], SMOKE)
    assert setup.gpu_step == "check_every=3" and setup.ablation_run_s(SMOKE) != SMOKE.ablation_run_s
    assert s.ablation(_config(tmp_path, 10)) is None
    assert [p[2] for p in pools] == ["check_every=3"]
    out = capsys.readouterr().out
    assert f"is planned at {setup.ablation_run_s(SMOKE):.0f} s" in out and "the step of --jobs 1 --gpu-step check_every=3" in out
