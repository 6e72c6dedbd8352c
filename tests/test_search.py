"""The search machinery with the distiller replaced by a fast fake: constraints, failures,
resume counting, Ctrl-C, multi-objective studies and the settings check."""

import json

import optuna
import pytest
import torch

import nas_kd.config
import nas_kd.distill
from nas_kd.config import Schedule
from nas_kd.errors import UserError
from nas_kd.search import SearchOptions, run_search
from nas_kd.study import INTERRUPTED, check_settings, default_study_name, finished_trials, load_study
from nas_kd.train import NonFiniteLossError

SPACE = """\
name: mini
block: inverted_residual
stem: {width: [4, 8], kernel: 3, stride: 1}
stages:
  - {stride: 2, depth: [1, 2], width: [8, 16], expand: [1, 3]}
"""
TINY_TEACHER = Schedule(epochs=1, batch_size=64, lr=0.05, warmup_epochs=0.0, train_subset=256)


@pytest.fixture
def setup(in_tmp, monkeypatch):
    """A tiny space, a one-epoch teacher and a fake distiller whose accuracy grows with width."""
    from nas_kd.models.teachers import ensure_teacher

    (in_tmp / "mini.yaml").write_text(SPACE)
    _, _, teacher = ensure_teacher("synthetic", "resnet8", TINY_TEACHER, preset="test", device=torch.device("cpu"), log=lambda *_: None)
    calls, seeds = [], []

    def fake_train(student, teacher, splits, schedule, mode, *, device, seed, epoch_callback=None, **kw):
        calls.append(getattr(mode, "name", mode))
        seeds.append(seed)
        acc = width_score(student)
        for epoch in range(1, schedule.epochs + 1):
            if epoch_callback:
                epoch_callback(epoch, acc)
        return {"val_accuracy": acc, "test_accuracy": acc, "history": [], "train_seconds": 0.01, "images_per_second": 1e5}

    monkeypatch.setattr(nas_kd.distill, "train", fake_train)
    opts = SearchOptions(budget="10M", space="mini.yaml", dataset="synthetic", teacher=str(teacher), mode="kd", trials=3, study="mini", preset="quick", device="cpu", retrain_seeds=1)
    fake_train.seeds = seeds
    return opts, calls


def quiet(*_):
    pass


def width_score(student) -> float:
    """The fake distiller's accuracy: it grows with the student's size."""
    return min(0.99, sum(p.numel() for p in student.parameters()) / 20000)


def record_sampler_seeds(monkeypatch) -> list[int]:
    """The seed of every budget sampler the search builds from now on, in order."""
    import nas_kd.search

    seeds: list[int] = []
    real = nas_kd.search._budget_sampler
    monkeypatch.setattr(nas_kd.search, "_budget_sampler", lambda plan, seed, table=None: seeds.append(seed) or real(plan, seed, table))
    return seeds


def fake_metrics(schedule, acc: float, epoch_callback=None, evaluate_test: bool = False) -> dict:
    """What a fake distiller returns for a run scoring ``acc``, its epochs reported as a real one's."""
    for epoch in range(1, schedule.epochs + 1):
        if epoch_callback:
            epoch_callback(epoch, acc)
    out = {"val_accuracy": acc, "history": [], "train_seconds": 0.01, "images_per_second": 1e5}
    return {**out, "test_accuracy": acc} if evaluate_test else out


def test_default_names_and_settings_check():
    assert default_study_name("fashion-mnist", "mbv2", "macs2M") == "fashion-mnist_mbv2_macs2M"
    stored = {"dataset": "synthetic", "mode": "kd", "budget": {"macs": 1}}
    check_settings(stored, dict(stored), "s")
    with pytest.raises(UserError, match="mode='kd'.*mode='full'"):
        check_settings(stored, {**stored, "mode": "full"}, "s")


def test_candidates_are_repaired_into_the_budget_never_rejected_and_never_repeated(setup):
    opts, calls = setup
    from nas_kd.cost import analytic_cost
    from nas_kd.space import SearchSpace

    space = SearchSpace.load("mini.yaml")
    lo = analytic_cost(space.smallest(), (1, 16, 16), 10).macs
    hi = analytic_cost(space.largest(), (1, 16, 16), 10).macs
    opts.budget, opts.baselines = str((lo + hi) // 2), False
    lines = []
    result = run_search(opts, log=lines.append, finish=False)
    assert not any("does not bind" in line for line in lines)  # this budget binds
    study = load_study("mini")
    trained = [t for t in study.trials if t.user_attrs.get("feasible")]
    assert len(study.trials) == len(finished_trials(study.trials)) == result["finished"] == 3 == len(trained) == len(calls)
    assert all(t.constraints["macs"] <= 0 and t.user_attrs["macs"] == t.user_attrs["analytic_macs"] <= int(opts.budget) for t in trained)
    assert len({t.user_attrs["config"] for t in trained}) == 3
    assert all({"config", "macs", "params", "train_seconds", "images_per_second", "feasible"} <= set(t.user_attrs) for t in trained)
    # the same command again adds nothing; asking for more adds exactly the difference
    assert run_search(opts, log=quiet, finish=False)["new_trials"] == 0
    opts.trials = 4
    run_search(opts, log=quiet, finish=False)
    assert len(finished_trials(load_study("mini").trials)) == 4 == len(calls)


def test_a_candidate_over_the_budget_is_rejected_before_any_training(setup, monkeypatch):
    """The objective's own check, behind the sampler's repair: with the repair switched off, raw
    proposals at a binding budget are mostly over it; each such trial is told 0 accuracy, marked
    infeasible with its constraint violated, and never reaches the distiller."""
    from nas_kd.cost import analytic_cost
    from nas_kd.proposals import BudgetSampler
    from nas_kd.space import SearchSpace

    opts, calls = setup
    monkeypatch.setattr(BudgetSampler, "repair", lambda self, params, seen: params)
    space = SearchSpace.load("mini.yaml")
    lo = analytic_cost(space.smallest(), (1, 16, 16), 10).macs
    hi = analytic_cost(space.largest(), (1, 16, 16), 10).macs
    opts.budget, opts.baselines, opts.trials, opts.sampler = str(lo + (hi - lo) // 8), False, 8, "random"
    run_search(opts, log=quiet, finish=False)
    trials = load_study("mini").trials
    rejected = [t for t in trials if not t.user_attrs["feasible"]]
    assert rejected and len(calls) == len(trials) - len(rejected)
    assert all(t.value == 0.0 and t.constraints["macs"] > 0 and t.user_attrs["macs"] > int(opts.budget) and "train_seconds" not in t.user_attrs for t in rejected)


def test_a_budget_that_admits_the_largest_member_is_named_before_training(setup):
    """10M MACs on the mini space admits every member: the search says so (a user who named a
    limit gets the largest, slowest students) before the first trial, and still runs."""
    from nas_kd.config import format_count
    from nas_kd.cost import analytic_cost
    from nas_kd.space import SearchSpace

    opts, calls = setup
    opts.trials, opts.baselines = 1, False
    space = SearchSpace.load("mini.yaml")
    largest = analytic_cost(space.largest(), (1, 16, 16), 10)
    assert largest.macs <= 10e6
    lines = []
    run_search(opts, log=lines.append, finish=False)
    notes = [i for i, line in enumerate(lines) if "does not bind" in line]
    assert len(notes) == 1 and len(calls) == 1
    assert lines[notes[0]].startswith(f"search: budget MACs <= 10.00M admits the largest member of {space.name} ({format_count(largest.macs)} MACs, {format_count(largest.params)} params): it does not bind;")
    assert notes[0] < next(i for i, line in enumerate(lines) if line.startswith("trial "))


@pytest.mark.parametrize("error", [NonFiniteLossError("loss became nan"), torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")], ids=["diverged", "out-of-memory"])
def test_a_diverged_trial_fails_with_its_reason_and_the_study_goes_on(setup, monkeypatch, error):
    """A candidate that diverges, or that the device has no memory for (a GPU shared by --jobs
    processes), fails alone: the study records why and trains the next."""
    opts, calls = setup
    real = nas_kd.distill.train

    def fail_once(*a, **kw):
        if not calls:
            calls.append("boom")
            raise error
        return real(*a, **kw)

    monkeypatch.setattr(nas_kd.distill, "train", fail_once)
    opts.baselines = False
    run_search(opts, log=quiet, finish=False)
    trials = load_study("mini").trials
    failed = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    assert len(failed) == 1 and failed[0].user_attrs["fail_reason"] == f"{type(error).__name__}: {error}"
    assert len(finished_trials(trials)) == 3 and sum(t.state.name == "COMPLETE" for t in trials) == 2


def test_ctrl_c_fails_the_trial_writes_a_partial_report_and_exits_130(setup, monkeypatch, cli):
    opts, _ = setup

    def interrupt(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(nas_kd.distill, "train", interrupt)
    code, _, err = cli("search", "--dataset", "synthetic", "--space", "mini.yaml", "--budget", "10M", "--teacher", opts.teacher, "--mode", "kd", "--study", "mini", "--trials", "2", "--preset", "quick", "--device", "cpu")
    assert code == 130 and "interrupted" in err
    (trial,) = load_study("mini").trials
    assert trial.state == optuna.trial.TrialState.FAIL and trial.user_attrs["fail_reason"] == INTERRUPTED
    assert finished_trials([trial]) == []  # a resumed run trains it again
    report = json.loads(open("runs/mini/report.json").read())
    assert report["partial"] and report["trials_by_state"] == {"FAIL": 1} and report["winner"] is None
    assert report["cut_short"] == f"0 of 2 requested candidates finished; {INTERRUPTED}"
    assert "partial" in open("runs/mini/report.md").read()


def test_two_objectives_no_pruning_pareto_winner_and_full_finish(setup):
    opts, calls = setup
    opts.objectives, opts.sampler, opts.trials, opts.rescreen = "accuracy,macs", "nsga2", 4, 3  # the re-screen path (quick defaults to none)
    result = run_search(opts, log=quiet)
    study = load_study("mini")
    assert len(study.directions) == 2 and study.metric_names == ["val_accuracy", "macs"]
    report = json.loads(open("runs/mini/report.json").read())
    best = max((t for t in study.trials if t.state.name == "COMPLETE"), key=lambda t: t.values[0])
    assert report["winner"]["trial"] == best.number and not report["partial"]
    # 4 trials, the re-screened (the top 3, and the baseline if it is not among them), winner kd,
    # baseline kd (unless the winner is the baseline: the same runs) and ce
    is_baseline = report["winner"]["config"] == report["baselines"]["config"]
    assert (calls.count("kd"), calls.count("ce")) == (4 + len(report["rescreen"]) + 1 + (0 if is_baseline else 1), 1)
    assert len(report["rescreen"]) in (3, 4) and report["winner"]["trial"] in [r["trial"] for r in report["rescreen"]]
    assert len(report["rescreen"]) == 3 or report["rescreen"][-1]["baseline"]
    assert (result["run_dir"] + "/export/student.onnx").endswith("onnx")
    from nas_kd.export import load_exported

    model, arch = load_exported("runs/mini/export")
    assert arch["student"] == report["winner"]["config"]


def test_the_test_split_is_read_by_the_final_retrain_only_and_equal_students_start_equal(setup, monkeypatch):
    """A whole search (trials, re-screen, retrain) with a fake distiller that records each run:
    the brief trials and the re-screen (on the search seed) are scored on validation and never
    read the test split; every retrain run (on the retrain seeds, disjoint from it) reads it. And
    a seed fixes the initial weights: the baseline's runs in its two modes start from the same
    weights seed by seed (paired), whatever ran before them."""
    import nas_kd.distill

    opts, _ = setup
    opts.rescreen, opts.retrain_seeds, opts.trials = 3, 2, 4
    runs = []

    def fake_train(student, teacher, splits, schedule, mode, *, device, seed, epoch_callback=None, evaluate_test=False, **kw):
        start = [p.detach().clone() for p in student.parameters()]
        runs.append({"config": student.config.describe(), "mode": getattr(mode, "name", mode), "seed": seed, "test": evaluate_test, "start": start})
        return fake_metrics(schedule, width_score(student), epoch_callback, evaluate_test)

    monkeypatch.setattr(nas_kd.distill, "train", fake_train)
    run_search(opts, log=quiet)
    report = json.loads(open("runs/mini/report.json").read())
    seeds = report["seeds"]
    assert seeds["search"] not in seeds["retrain"] and len(seeds["retrain"]) == 2
    on_search_seed = [r for r in runs if r["seed"] == seeds["search"]]
    assert len(on_search_seed) >= 4 + 3 and not any(r["test"] for r in on_search_seed)  # trials and re-screen
    assert all(r["test"] and r["seed"] in seeds["retrain"] for r in runs if r["seed"] != seeds["search"])
    from nas_kd.models.student import StudentConfig

    uniform = StudentConfig.from_json(json.dumps(report["baselines"]["config"])).describe()
    baseline = [r for r in runs if r["test"] and r["config"] == uniform]
    for seed in seeds["retrain"]:
        ce, kd = ([r["start"] for r in baseline if r["seed"] == seed and r["mode"] == m] for m in ("ce", "kd"))
        assert len(ce) == len(kd) == 1 and all(torch.equal(a, b) for a, b in zip(ce[0], kd[0], strict=True))
    from nas_kd.workers import FINALIZE_ATTR

    assert load_study("mini").user_attrs[FINALIZE_ATTR]["done"] is True  # a later search finds it finalised, not abandoned


def test_bad_options_fail_before_any_work(in_tmp, cli):
    code, _, err = cli("search", "--budget", "2X")
    assert code == 2 and "invalid budget" in err
    code, _, err = cli("search", "--dataset", "synthetic", "--trials", "0")
    assert code == 2 and "--trials" in err
    for flag, text, says in (("--brief", "epochs=0", "epochs takes a whole number"), ("--full", "warmup=1", "known fields are"), ("--brief", "crop=yes", "crop takes 0 or 1")):
        code, _, err = cli("search", "--dataset", "synthetic", flag, text)
        assert code == 2 and says in err and len(err.strip().splitlines()) == 1
    assert not (in_tmp / "runs").exists()  # refused before any folder or teacher
    code, _, err = cli("finalize", "--study", "nope")
    assert code == 2 and "no study 'nope'" in err
    code, _, err = cli("export", "--study", "nope")
    assert code == 2 and "no study 'nope'" in err


def test_no_finished_candidate_leaves_a_partial_report_and_one_line(setup, monkeypatch, cli):
    opts, calls = setup

    def diverge(*a, **kw):
        calls.append("nan")
        raise NonFiniteLossError("loss became nan")

    monkeypatch.setattr(nas_kd.distill, "train", diverge)
    code, out, err = cli("search", "--dataset", "synthetic", "--space", "mini.yaml", "--budget", "10M", "--teacher", opts.teacher, "--mode", "kd", "--study", "mini", "--trials", "2", "--sampler", "random", "--no-baselines", "--preset", "quick", "--device", "cpu")
    assert code == 2 and "no candidate within budget finished" in err and err.count("\n") == 1 and calls == ["nan", "nan"]
    report = json.loads(open("runs/mini/report.json").read())
    assert report["partial"] and report["winner"] is None and report["trials_by_state"] == {"FAIL": 2}


def test_the_uniform_baseline_is_the_first_candidate(setup):
    opts, calls = setup
    from nas_kd.space import SearchSpace

    opts.trials = 2
    run_search(opts, log=quiet, finish=False)
    first = load_study("mini").trials[0]
    base = SearchSpace.load("mini.yaml").baseline(nas_kd.config.parse_budget(opts.budget), (1, 16, 16), 10)
    assert first.user_attrs.get("baseline") is True and first.user_attrs["config"] == base.to_json()


def test_pruning_waits_for_five_trained_candidates_not_rejections():
    import optuna

    from nas_kd.search import TrainedMedianPruner

    study = optuna.create_study(direction="maximize", pruner=TrainedMedianPruner(n_startup_trials=5, n_warmup_steps=1))
    for _ in range(10):  # over-budget rejections: COMPLETE, untrained, no intermediate values
        t = study.ask()
        t.set_user_attr("feasible", False)
        study.tell(t, 0.0)
    good = study.ask()
    good.set_user_attr("feasible", True)
    good.report(0.9, 1)
    study.tell(good, 0.9)
    weak = study.ask()
    weak.report(0.1, 1)
    assert not weak.should_prune()  # plain MedianPruner would prune here: 11 COMPLETE trials
    study.tell(weak, state=optuna.trial.TrialState.PRUNED)
    for v in (0.8, 0.7, 0.85, 0.75):
        t = study.ask()
        t.set_user_attr("feasible", True)
        t.report(v, 1)
        study.tell(t, v)
    late = study.ask()
    late.report(0.1, 1)
    assert late.should_prune()  # five trained candidates now set the median


def test_mode_ce_loads_no_teacher_and_the_report_says_so(setup, monkeypatch):
    import nas_kd.models.teachers

    opts, calls = setup

    def no_teacher(*a, **kw):
        raise AssertionError("mode ce resolved a teacher")

    monkeypatch.setattr(nas_kd.models.teachers, "resolve_teacher", no_teacher)
    opts.mode, opts.teacher, opts.trials = "ce", "default", 2
    result = run_search(opts, log=quiet)
    assert set(calls) == {"ce"} and result["verdict"] and "mode ce" in result["verdict"]
    assert "Teacher**: none" in open("runs/mini/report.md").read()


class SlowingTable:
    """A stand-in latency table, 1 ruler per million MACs, on a machine that slows down: each table
    object times its ruler twice as slow as the one made before it (0.5 ms, 1 ms, 2 ms, ...)."""

    made = 0
    threads = 1

    def __init__(self):
        type(self).made += 1
        self.ruler_ms = 0.5 * 2 ** (type(self).made - 1)

    def predict_rulers(self, cfg, shape, classes, space=None):
        from nas_kd.cost import analytic_cost

        return analytic_cost(cfg, shape, classes).macs / 1e6


def test_the_enqueued_baseline_is_judged_at_the_ruler_timing_it_was_chosen_at(setup, monkeypatch):
    """One table (one ruler timing) per search process for the sampler, the enqueued baseline and
    the objective. With a table each, the baseline chosen at one timing was judged at a slower
    one and rejected untrained, so the search did not start from the hand-scaled answer."""
    import nas_kd.latency
    from nas_kd.cost import analytic_cost
    from nas_kd.latency import Latency
    from nas_kd.space import SearchSpace

    def measure(cfg, shape, classes, threads=1, **_):  # agrees with the table: judged at the meter's own ruler
        rulers = analytic_cost(cfg, shape, classes).macs / 1e6
        return Latency(0.0, 0.0, 0.0, 100, 1, "cpu", "ort", ruler_ms=1e-6, rulers=rulers)

    monkeypatch.setattr(SlowingTable, "made", 0)
    monkeypatch.setattr(nas_kd.latency, "LatencyTable", SlowingTable)
    monkeypatch.setattr(nas_kd.latency, "measure_latency", measure)
    opts, calls = setup
    space = SearchSpace.load("mini.yaml")
    uniform = sorted(analytic_cost(m, (1, 16, 16), 10).macs for m in space.uniform_members())
    limit = uniform[-2] / 1e6 * 2.0001  # binds at a 2 ms ruler (the plan's checks make two tables, the search the third)
    opts.budget, opts.trials = f"latency:{limit:.6f}ms", 1
    run_search(opts, log=lambda _: None, finish=False)
    first = load_study("mini").trials[0]
    assert first.user_attrs["baseline"] and first.user_attrs["feasible"] and calls  # trained, not rejected
    # chosen at the ruler of the last table made, the one the objective judged it with
    last_ruler = 0.5 * 2 ** (SlowingTable.made - 1)
    assert first.user_attrs["macs"] == max(m for m in uniform if m / 1e6 * last_ruler <= limit)


def test_brief_and_full_schedule_changes_reach_every_run_the_report_and_the_command(setup, monkeypatch):
    """--brief changes each candidate's run, --full the re-screen and the final retrain; the plan
    keeps them (a resumed or finalized study trains with them), the report says so and its
    command reproduces them."""
    from nas_kd.config import get_preset, parse_schedule_overrides
    from nas_kd.plan import plan_of

    opts, _ = setup
    inner, seen = nas_kd.distill.train, []

    def recording(student, teacher, splits, schedule, mode, **kw):
        seen.append(schedule)
        return inner(student, teacher, splits, schedule, mode, **kw)

    monkeypatch.setattr(nas_kd.distill, "train", recording)
    opts.trials, opts.rescreen = 2, 2
    opts.brief, opts.full = "epochs=1,batch_size=8,lr=0.05,crop=1", "epochs=1,train_subset=0"
    run_search(opts, log=quiet)
    quick = get_preset("quick")
    brief = quick.brief.replace(epochs=1, batch_size=8, lr=0.05, crop=True)
    full = Schedule(**{**quick.full.to_dict(), "epochs": 1, "train_subset": None})
    assert seen.count(brief) == 2 and seen.count(full) == len(seen) - 2 >= 3  # re-screen, winner, baselines
    plan = plan_of(load_study("mini"))
    assert (plan.brief, plan.full) == (brief, full)
    report = json.loads(open("runs/mini/report.json").read())
    assert report["schedule_changes"] == {"brief": "epochs=1,batch_size=8,lr=0.05,crop=1", "full": "epochs=1,train_subset=0"}
    assert "brief schedule changed: epochs=1,batch_size=8,lr=0.05,crop=1" in open("runs/mini/report.md").read()
    command = plan.command().split()
    again = {flag: parse_schedule_overrides(command[command.index(flag) + 1], flag) for flag in ("--brief", "--full")}
    assert quick.brief.replace(**again["--brief"]) == brief and Schedule(**{**quick.full.to_dict(), **again["--full"]}) == full


def test_a_worker_with_another_brief_schedule_is_refused(setup):
    """The brief schedule decides what a trial's score means: a second worker (or a resumed run)
    with another `--brief` must not add trials to the study."""
    opts, _ = setup
    opts.trials, opts.brief = 1, "epochs=1"
    run_search(opts, log=quiet, finish=False)
    opts.trials, opts.brief = 2, None
    with pytest.raises(UserError, match="created with brief=") as refused:
        run_search(opts, log=quiet, finish=False)
    assert "use the same options (nas-kd search " in str(refused.value) and "--brief epochs=1 " in str(refused.value)  # the line that resumes it
    opts.mode = "full"  # a default changed since the study began (the standard preset's mode, 2026-12-07): its line names it
    with pytest.raises(UserError, match="created with mode='kd ") as refused:
        run_search(opts, log=quiet, finish=False)
    assert "--mode kd " in str(refused.value)
    opts.mode = None
    opts.brief = "epochs=1"
    run_search(opts, log=quiet, finish=False)  # the same change joins
    assert len(finished_trials(load_study("mini").trials)) == 2


def test_a_child_objective_opens_the_parents_teacher_cache_or_fills_its_own_when_it_does_not_fit(in_tmp):
    """What a --jobs child does with the file its parent shares: open it (no teacher pass), or say
    why not and fill its own (the search goes on)."""
    from nas_kd.data import dataset_info
    from nas_kd.models.teachers import ensure_teacher, load_teacher
    from nas_kd.plan import build_plan
    from nas_kd.search import Objective

    (in_tmp / "mini.yaml").write_text(SPACE)
    _, _, path = ensure_teacher("synthetic", "resnet8", TINY_TEACHER, preset="test", device=torch.device("cpu"), log=lambda *_: None)
    plan = build_plan(SearchOptions(dataset="synthetic", teacher=str(path), space="mini.yaml", budget="1M", mode="full", preset="quick", device="cpu"))
    cpu = torch.device("cpu")

    def teacher():
        return load_teacher(path, dataset_info("synthetic"), cpu)[0]

    parent = Objective(plan, teacher=teacher(), device=cpu, prune=False)
    with parent.share_cache(in_tmp / "cache.pt") as shared:
        lines: list[str] = []
        child_teacher = teacher()
        passes = []
        child_teacher.register_forward_pre_hook(lambda *_: passes.append(1))
        child = Objective(plan, teacher=child_teacher, device=cpu, prune=False, shared_cache=shared, log=lines.append)
        child.data()
        assert lines == [f"search: the teacher's outputs opened from {shared}, not computed again"] and passes == []
        assert torch.equal(child._cache.logits, parent._cache.logits) and child._attention.keys() == parent._attention.keys()
        nudged = teacher()
        with torch.no_grad():
            next(nudged.parameters()).view(-1)[0] += 0.1
        lines.clear()
        other = Objective(plan, teacher=nudged, device=cpu, prune=False, shared_cache=shared, log=lines.append)
        other.data()
        assert len(lines) == 1 and "not usable here" in lines[0] and "another teacher" in lines[0]
        assert other._cache is not None and other._cache.teacher is nudged and not torch.equal(other._cache.logits, parent._cache.logits)
    assert not (in_tmp / "cache.pt").exists()


def test_every_candidate_starts_from_the_search_seed_and_sees_the_same_batches(setup, monkeypatch):
    """What makes brief runs comparable: each candidate's initial weights are its config built
    under the search seed, and its training batches come in the same order, whatever trained
    before it in the process."""
    import nas_kd.distill
    from nas_kd.models.student import build_student

    opts, _ = setup
    opts.trials, opts.baselines = 4, False
    seen = []

    def fake_train(student, teacher, splits, schedule, mode, *, device, seed, epoch_callback=None, loaders=None, **kw):
        torch.manual_seed(seed)
        fresh = build_student(student.config, splits.info.channels, splits.info.num_classes)
        seen.append((all(torch.equal(a, b) for a, b in zip(student.state_dict().values(), fresh.state_dict().values(), strict=True)), next(iter(loaders[0].batches())).index.tolist()))
        for _ in loaders[0].batches():  # a whole epoch drawn, as training would, before the next trial
            pass
        return fake_metrics(schedule, 0.5, epoch_callback)

    monkeypatch.setattr(nas_kd.distill, "train", fake_train)
    run_search(opts, log=quiet, finish=False)
    assert len(seen) == 4 and all(same for same, _ in seen)
    assert all(order == seen[0][1] for _, order in seen)
    # Each epoch's score is reported to the study, where the pruner and the dashboard read it.
    from nas_kd.config import get_preset

    epochs = range(1, get_preset("quick").brief.epochs + 1)
    assert all(t.intermediate_values == dict.fromkeys(epochs, 0.5) and t.user_attrs["val_history"] == [0.5] * len(epochs) for t in load_study("mini").trials)


def test_a_candidate_is_never_pruned_at_its_last_epoch(setup, monkeypatch):
    """Pruning saves the epochs a weak candidate has left; at its last one it has none left, and
    its finished score is worth more to the sampler than a pruned one."""
    from nas_kd.search import TrainedMedianPruner

    opts, _ = setup
    opts.baselines, opts.prune, opts.brief = False, True, "epochs=1"
    monkeypatch.setattr(TrainedMedianPruner, "prune", lambda self, study, trial: True)
    run_search(opts, log=quiet, finish=False)
    assert [t.state.name for t in load_study("mini").trials] == ["COMPLETE"] * 3


def test_why_a_session_stopped_short_reaches_the_report(setup, monkeypatch):
    """A timeout, too many over-budget candidates, or Ctrl-C: the report says which."""
    import dataclasses

    import nas_kd.search

    opts, _ = setup
    opts.baselines = False

    def report():
        return json.loads(open("runs/mini/report.json").read())["cut_short"]

    opts.timeout, opts.trials = 1e-9, 3  # past before the loop looks: no trial starts
    run_search(opts, log=quiet, finish=False)
    nas_kd.search._partial_report(load_study("mini"), quiet)
    assert report() == "0 of 3 requested candidates finished; --timeout 1e-09 s reached"

    real = nas_kd.search.trial_counts
    monkeypatch.setattr(nas_kd.search, "trial_counts", lambda trials: dataclasses.replace(real(trials), rejected=10_000))
    opts.timeout = None
    run_search(opts, log=quiet, finish=False)
    nas_kd.search._partial_report(load_study("mini"), quiet)
    assert report().endswith("stopped after 10000 over-budget candidates; raise the budget or narrow the space")


def test_a_resumed_session_adds_its_wall_time_and_draws_from_a_new_seed(setup, monkeypatch):
    """Sessions of one study add up their wall time (the report's search_wall_seconds), and a
    resumed session's sampler is seeded past the first one's (it must not replay its draws)."""
    import types

    import nas_kd.search

    opts, _ = setup
    opts.baselines, opts.trials = False, 2
    clock = iter(range(0, 1000, 10))
    monkeypatch.setattr(nas_kd.search, "time", types.SimpleNamespace(perf_counter=lambda: float(next(clock))))
    seeds = record_sampler_seeds(monkeypatch)
    run_search(opts, log=quiet, finish=False)
    first = load_study("mini").user_attrs["search_wall_seconds"]
    opts.trials = 4
    run_search(opts, log=quiet, finish=False)
    assert first == 10.0 and load_study("mini").user_attrs["search_wall_seconds"] == 20.0
    search_seed = nas_kd.search.plan_of(load_study("mini")).seeds.search
    assert seeds == [search_seed, search_seed + 2]


def test_each_worker_of_a_study_draws_from_its_own_seed(setup, monkeypatch):
    """--jobs children joining one study at once must not propose one stream of students."""
    import nas_kd.search

    opts, _ = setup
    opts.baselines, opts.trials = False, 1
    run_search(opts, log=quiet, finish=False)
    seeds = record_sampler_seeds(monkeypatch)
    plan = nas_kd.search.plan_of(load_study("mini"))
    for worker in (1, 2):
        nas_kd.search._join_study(plan, worker)
    assert seeds[1] - seeds[0] == nas_kd.search.WORKER_SEED_STRIDE


def test_a_trial_line_names_rejections_and_a_pruned_trials_last_score():
    from optuna.trial import TrialState, create_trial

    from nas_kd.search import trial_line

    rejected = create_trial(value=0.0, constraints={"macs": 1_000_000.0}, user_attrs={"feasible": False, "describe": "ir c4 s1:d1w8k3e1", "macs": 2_000_000})
    line = trial_line(rejected)
    assert "2.00M MACs  val   -   " in line and line.endswith("INFEASIBLE")
    pruned = create_trial(state=TrialState.PRUNED, intermediate_values={1: 0.4, 2: 0.55}, user_attrs={"feasible": True, "describe": "ir c4 s1:d1w8k3e1", "macs": 90_000})
    line = trial_line(pruned)
    assert "val 0.5500" in line and line.endswith("PRUNED")


def test_tpe_models_after_the_plans_startup_candidates():
    from nas_kd.search import make_sampler

    assert make_sampler("tpe", 0, False, startup_trials=7)._n_startup_trials == 7


def test_no_more_trial_processes_start_than_trials_are_left(setup, monkeypatch):
    """--jobs 4 with 2 trials to go: this process and one child (a third would start only to
    leave again)."""
    from nas_kd.jobs import LocalWorkers

    opts, _ = setup
    opts.baselines, opts.trials, opts.jobs = False, 2, 4
    started = []
    monkeypatch.setattr(LocalWorkers, "start", lambda self, count, threads, teacher_cache=None: started.append(count))
    run_search(opts, log=quiet, finish=False)
    assert started == [1]


def test_loss_weight_overrides_reach_the_retrain_in_the_studys_mode(setup, monkeypatch):
    """--loss-weights changes the study's mode for every run in it: the brief trials, the winner's
    and the baseline's retrain in that mode; the plain ce baseline stays plain."""
    import nas_kd.distill

    opts, _ = setup
    opts.loss_weights, opts.retrain_seeds = "kd=0.75", 1
    runs = []

    def fake_train(student, teacher, splits, schedule, mode, *, device, seed, epoch_callback=None, evaluate_test=False, **kw):
        runs.append((mode.name, mode.weights.kd, evaluate_test))
        return fake_metrics(schedule, width_score(student), epoch_callback, evaluate_test)

    monkeypatch.setattr(nas_kd.distill, "train", fake_train)
    run_search(opts, log=quiet)
    retrain = [(name, kd) for name, kd, tested in runs if tested]
    assert all(kd == 0.75 for name, kd, _ in runs if name == "kd")
    assert set(retrain) == {("kd", 0.75), ("ce", 0.0)}  # the winner and baseline in the study's mode; the baseline in ce
