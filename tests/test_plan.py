"""`SearchPlan`: built and checked before any work, stored with the study, round-tripped exactly."""

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import pytest

import nas_kd.models.teachers
from nas_kd.config import get_preset
from nas_kd.errors import UserError
from nas_kd.plan import SearchOptions, SearchPlan, Seeds, TeacherRef, build_plan

MBV2 = str(Path(__file__).resolve().parents[1] / "search_spaces" / "mbv2.yaml")


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` with its bytes' hash: 'byte-for-byte unchanged' made checkable."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def quick_plan(**options) -> SearchPlan:
    """The plan of a quick-preset search of mbv2 on synthetic data without baselines, ``options`` changed."""
    return build_plan(dataclasses.replace(SearchOptions(space=MBV2, dataset="synthetic", preset="quick", baselines=False), **options))


def test_impossible_budget_changes_nothing_and_trains_nothing(in_tmp, cli, monkeypatch):
    (in_tmp / "runs" / "earlier").mkdir(parents=True)
    (in_tmp / "runs" / "earlier" / "report.md").write_text("an earlier study\n")
    before = snapshot(in_tmp)

    def no_training(*a, **kw):
        raise AssertionError("a teacher was trained before the budget was checked")

    monkeypatch.setattr(nas_kd.models.teachers, "train_teacher", no_training)
    code, out, err = cli("search", "--budget", "1k", "--space", MBV2, "--dataset", "synthetic", "--teacher", "resnet8", "--device", "cpu")
    assert code == 2 and err.count("\n") == 1 and "below the smallest member" in err and "raise the budget" in err
    assert snapshot(in_tmp) == before and sorted(os.listdir(in_tmp / "runs")) == ["earlier"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"budget": "2X"}, "invalid budget"),
        ({"space": "missing.yaml"}, "cannot read search space"),
        ({"dataset": "nope"}, "unknown dataset"),
        ({"mode": "nope"}, "unknown distillation mode"),
        ({"loss_weights": "kd=-1"}, "kd"),
        ({"objectives": "macs"}, "--objectives"),
        ({"sampler": "grid"}, "unknown sampler"),
        ({"study": "a/b"}, "invalid study name"),
        ({"retrain_seeds": 0}, "--retrain-seeds"),
        ({"startup_trials": 0}, "--startup-trials"),
        ({"sampler": "random", "startup_trials": 4}, "applies to --sampler tpe"),
        ({"timeout": 0.0}, "--timeout must be positive seconds, got 0.0"),
        ({"min_fill": 1.01}, "--min-fill must be between 0 and 1"),
        ({"min_fill": -0.1}, "--min-fill must be between 0 and 1"),
        ({"heartbeat": 0}, "--heartbeat must be at least 1 second"),
        ({"jobs": 0}, "--jobs must be at least 1"),
        ({"rescreen": -1}, "--rescreen must be 0"),
        ({"prune_from_epoch": 0}, "--prune-from-epoch must be at least 1"),
        ({"trials": 0}, "--trials must be at least 1"),
    ],
)
def test_every_option_is_checked_by_build_plan(in_tmp, change, message):
    opts = dataclasses.replace(SearchOptions(space=MBV2, dataset="synthetic", baselines=False), **change)
    with pytest.raises(UserError, match=message):
        build_plan(opts)
    assert not (in_tmp / "runs").exists()


def test_plan_round_trips_and_resolves_once(in_tmp):
    plan = build_plan(SearchOptions(budget="macs:2M,params:50k", space=MBV2, dataset="synthetic", mode="full", loss_weights="kd=0.7,adv_feat=0", seed=5, teacher_seed=2, retrain_seeds=4, preset="quick", startup_trials=4))
    plan = dataclasses.replace(plan, teacher=TeacherRef(spec="resnet8", path="t.pt", sha256="cd" * 32, arch="resnet8", test_accuracy=0.9))
    assert plan.seeds == Seeds(search=5, split=2, retrain=(6, 7, 8, 9))  # disjoint from the search seed
    assert plan.mode.weights.kd == 0.7 and plan.mode.weights.adv_feat == 0 and plan.mode.name == "full"
    assert plan.budget.macs == 2_000_000 and plan.budget.params == 50_000 and plan.study == "synthetic_mbv2_macs2M-params50k"
    again = SearchPlan.from_dict(json.loads(json.dumps(plan.to_dict())))
    assert again == plan and again.mode == plan.mode and again.space == plan.space and again.to_dict() == plan.to_dict()
    assert "--loss-weights kd=0.7,adv_feat=0" in plan.command() and "--seed 5" in plan.command()
    assert again.startup_trials == 4 and "--startup-trials 4" in plan.command()


def test_the_tpe_sampler_models_after_the_plans_startup_trials(in_tmp):
    from nas_kd.search import _budget_sampler

    for startup in (3, 10):
        plan = build_plan(SearchOptions(space=MBV2, dataset="synthetic", preset="quick", baselines=False, startup_trials=startup))
        assert _budget_sampler(plan, 0).base._n_startup_trials == startup
    old = plan.to_dict()
    del old["startup_trials"]  # a plan stored before the option existed searched with Optuna's 10
    assert SearchPlan.from_dict(old).startup_trials == 10


def test_pruning_follows_the_preset_unless_asked(in_tmp):
    import optuna

    from nas_kd.search import TrainedMedianPruner, _pruner

    def plan(preset: str, prune=None) -> SearchPlan:
        return build_plan(SearchOptions(space=MBV2, dataset="synthetic", preset=preset, baselines=False, prune=prune))

    lines: list[str] = []
    quick, standard = plan("quick"), plan("standard")
    assert not quick.prune and standard.prune  # quick's 8 trials count pruned candidates (nas_kd.config)
    assert isinstance(_pruner(quick, lines.append), optuna.pruners.NopPruner) and "no pruning (the quick preset)" in lines[-1]
    assert isinstance(_pruner(standard, lines.append), TrainedMedianPruner)
    asked = plan("quick", prune=True)
    assert asked.prune and isinstance(_pruner(asked, lines.append), TrainedMedianPruner) and "--prune" in asked.command()
    off = plan("standard", prune=False)
    assert isinstance(_pruner(off, lines.append), optuna.pruners.NopPruner) and "(--no-prune)" in lines[-1] and "--no-prune" in off.command()
    assert "prune" not in quick.command() and SearchPlan.from_dict(json.loads(json.dumps(asked.to_dict()))) == asked
    old = quick.to_dict()
    del old["prune"], old["preset"]["prune"]  # stored before the option existed: every preset pruned
    assert SearchPlan.from_dict(old).prune and SearchPlan.from_dict(old).preset.prune
    # The line reproduces the stored plan under today's presets: that old plan pruned, quick no longer does.
    assert "--prune" in SearchPlan.from_dict(old).command()


def test_the_standard_pruner_starts_after_epoch_two_and_old_plans_keep_epoch_one(in_tmp):
    """Measured (docs/BENCHMARKS.md, prune-signal-standard-s1): the standard brief run's first
    epoch barely ranks candidates, so its pruner waits for the second. What the pruner does is
    checked on a real study in tests/test_prune_signal.py; here, the plan carries it."""
    from nas_kd.search import _pruner

    def plan(preset: str, **kw) -> SearchPlan:
        return build_plan(SearchOptions(space=MBV2, dataset="synthetic", preset=preset, baselines=False, **kw))

    standard, lines = plan("standard"), []
    assert standard.prune_from_epoch == 2 and _pruner(standard, lines.append)._median._n_warmup_steps == 2
    assert "stopped after epoch 2 " in lines[-1] and "prune" not in standard.command()
    asked = plan("quick", prune=True, prune_from_epoch=2)  # a 2-epoch brief run: nothing left to prune
    assert _pruner(asked, lines.append)._median._n_warmup_steps == 2 and "so nothing is pruned" in lines[-1]
    assert "--prune-from-epoch 2" in asked.command() and SearchPlan.from_dict(json.loads(json.dumps(asked.to_dict()))) == asked
    old = standard.to_dict()
    del old["prune_from_epoch"], old["preset"]["prune_from_epoch"]  # stored before 2026-12-07: pruned from epoch 1
    again = SearchPlan.from_dict(old)
    assert again.prune_from_epoch == 1 and _pruner(again, lines.append)._median._n_warmup_steps == 1
    assert "--prune-from-epoch 1" in again.command()  # today's standard preset would start at 2


def test_the_rescreen_follows_the_preset_unless_asked(in_tmp):
    def plan(preset: str, rescreen=None) -> SearchPlan:
        return build_plan(SearchOptions(space=MBV2, dataset="synthetic", preset=preset, baselines=False, rescreen=rescreen))

    quick, standard = plan("quick"), plan("standard")
    assert (quick.rescreen, standard.rescreen) == (3, 3)  # both re-screen the brief top 3 (nas_kd.config)
    assert "--rescreen" not in quick.command() and "--rescreen" not in standard.command()
    asked = plan("quick", rescreen=0)
    assert asked.rescreen == 0 and "--rescreen 0" in asked.command()
    assert "--rescreen 5" in plan("standard", rescreen=5).command()
    assert SearchPlan.from_dict(json.loads(json.dumps(asked.to_dict()))) == asked
    # A quick plan stored while quick did not re-screen (2026-12-03): its preset says 0, and the
    # line says so under today's preset, which does.
    stored = quick.to_dict()
    stored["rescreen"] = stored["preset"]["rescreen"] = 0
    assert SearchPlan.from_dict(stored).rescreen == 0 and "--rescreen 0" in SearchPlan.from_dict(stored).command()
    # A plan stored before the option existed (its preset has no such field) chose by the brief run alone.
    old = quick.to_dict()
    del old["rescreen"], old["preset"]["rescreen"]
    assert SearchPlan.from_dict(old).rescreen == 0 and "--rescreen 0" in SearchPlan.from_dict(old).command()
    with pytest.raises(UserError, match="--rescreen"):
        plan("quick", rescreen=-1)


def test_deployment_budget_and_precision_round_trip(in_tmp):
    plan = build_plan(SearchOptions(budget="memory:90k,size:40k", precision="fp32", space=MBV2, dataset="synthetic", preset="quick", baselines=False))
    assert (plan.budget.memory, plan.budget.size, plan.budget.precision) == (90_000, 40_000, "fp32")
    assert plan.study == "synthetic_mbv2_memory90k-size40k-fp32" and "--precision fp32" in plan.command()
    again = SearchPlan.from_dict(json.loads(json.dumps(plan.to_dict())))
    assert again == plan and again.budget.precision == "fp32" and again.to_dict() == plan.to_dict()
    int8 = build_plan(SearchOptions(budget="memory:90k,size:40k", space=MBV2, dataset="synthetic", preset="quick", baselines=False))
    assert int8.settings()["budget"] != plan.settings()["budget"]  # workers of another precision are refused
    with pytest.raises(UserError, match=r"below the smallest member of mbv2 \(.*kB peak memory"):
        build_plan(SearchOptions(budget="memory:1k", space=MBV2, dataset="synthetic", preset="quick", baselines=False))


def test_settings_tell_workers_apart(in_tmp):
    base = build_plan(SearchOptions(space=MBV2, dataset="synthetic", baselines=False, preset="quick"))
    same = build_plan(SearchOptions(space=MBV2, dataset="synthetic", baselines=False, preset="quick", trials=50, retrain_seeds=5))
    other = build_plan(SearchOptions(space=MBV2, dataset="synthetic", baselines=False, preset="quick", loss_weights="kd=0.9"))
    assert base.settings() == same.settings()  # how many trials or retrain seeds do not change a trial's value
    assert base.settings()["mode"] != other.settings()["mode"]


def test_a_stored_plan_keeps_its_mode_when_a_default_changes(in_tmp, monkeypatch):
    """A study trains, re-screens and retrains with the mode it began with. Should a mode's
    default change (kd's T, a knob), a resumed worker must be refused, and the line it is shown
    must rebuild the stored mode under today's defaults."""
    from nas_kd.distill import modes
    from nas_kd.study import check_settings

    def plan(**kw) -> SearchPlan:
        return build_plan(SearchOptions(space=MBV2, dataset="synthetic", preset="quick", baselines=False, study="m", mode="kd", **kw))

    stored = json.loads(json.dumps(plan(loss_weights="kd=0.6").to_dict()))
    monkeypatch.setitem(modes.MODES, "kd", dataclasses.replace(modes.MODES["kd"], temperature=2.0, adv_warmup=0.2))
    kept = SearchPlan.from_dict(stored)
    assert (kept.mode.temperature, kept.mode.adv_warmup, kept.mode.weights.kd) == (4.0, 0.0, 0.6)
    today = plan(loss_weights="kd=0.6")
    assert today.mode.temperature == 2.0
    with pytest.raises(UserError, match="created with mode='kd .*T=4.*but this run has mode='kd .*T=2") as refused:
        check_settings(kept.settings(), today.settings(), "m", own_command=kept.command())
    assert "--loss-weights kd=0.6,temperature=4,adv_warmup=0 " in str(refused.value)
    again = plan(loss_weights="kd=0.6,temperature=4,adv_warmup=0")
    check_settings(kept.settings(), again.settings(), "m")  # the line it names joins
    assert again.mode.signature() == kept.mode.signature()
    with pytest.raises(UserError, match="adv_warmup=0.2"):  # a knob alone (not named by describe) is refused too
        check_settings(kept.settings(), plan(loss_weights="kd=0.6,temperature=4").settings(), "m")
    # Stored before the resolved mode was: nothing says otherwise, so today's defaults.
    del stored["mode"]["resolved"]
    assert SearchPlan.from_dict(stored).mode == today.mode


def test_an_old_or_foreign_plan_is_refused():
    with pytest.raises(UserError, match="start a new study"):
        SearchPlan.from_dict({"study": "x", "mode": "full"})


def test_the_default_mode_is_the_presets_and_an_explicit_mode_wins():
    def plan(**kw):
        return build_plan(SearchOptions(space=MBV2, dataset="synthetic", study="m", **kw))

    assert plan(preset="quick").mode_name == "kd"  # the CPU default: full measured no better at 1.7-2.7x the time
    assert plan(preset="standard").mode_name == "kd"  # since session 39: full led detectably on no standard schedule
    assert plan(preset="quick", mode="full").mode_name == "full"
    assert plan(preset="standard", mode="full").to_dict()["preset"]["mode"] == "kd"  # the preset's default is kept apart from the choice
    stored = plan(preset="standard").to_dict()
    del stored["preset"]["mode"]  # a study stored before presets carried a mode: they all distilled in full
    assert SearchPlan.from_dict(stored).preset.mode == "full"
    assert SearchPlan.from_dict(plan(preset="quick").to_dict()).preset.mode == "kd"


def test_every_stored_choice_comes_back_from_the_study(in_tmp):
    """A resumed study, a `--jobs` child and `finalize` rebuild the plan from the study alone: each
    choice set away from its default must survive the round trip (a default that came back in its
    place would go unnoticed where the default is what was asked)."""
    opts = SearchOptions(space=MBV2, dataset="synthetic", preset="quick", min_fill=0.7, jobs=3, gpu_step="graph=1,bf16=0", rescreen=2, prune=True, baselines=False, timeout=90.0, heartbeat=7, sampler="random", brief="epochs=3", full="lr=0.05")
    plan = build_plan(opts)
    assert not get_preset("quick").prune  # so prune=True is a choice away from the default
    again = SearchPlan.from_dict(json.loads(json.dumps(plan.to_dict())))
    assert again == plan
    assert (again.min_fill, again.jobs, again.rescreen, again.prune, again.baselines, again.timeout, again.heartbeat, again.sampler) == (0.7, 3, 2, True, False, 90.0, 7, "random")
    assert again.step.graph and not again.step.bf16 and again.brief.epochs == 3 and again.full.lr == 0.05
    line = plan.command()
    for flag in ("--min-fill 0.7", "--jobs 3", "--rescreen 2", "--prune", "--no-baselines", "--brief epochs=3", "--full lr=0.05", "--timeout 90.0", "--sampler random", f"--gpu-step {again.step.describe()}"):
        assert flag in line, (flag, line)


def test_settings_hold_the_teacher_and_the_split_it_decides(in_tmp):
    """Workers and resumes of one study must distil from the same teacher file and validate on
    the same split (the teacher's seed draws it): another teacher or seed is another study."""
    from nas_kd.study import check_settings

    one, two = in_tmp / "one.pt", in_tmp / "two.pt"
    one.write_bytes(b"teacher one")
    two.write_bytes(b"teacher two")
    base = build_plan(SearchOptions(space=MBV2, dataset="synthetic", baselines=False, preset="quick"))
    first = base.with_teacher({"seed": 0, "arch": "resnet8"}, one)
    assert first.seeds.split == 0 and first.teacher.sha256 == hashlib.sha256(b"teacher one").hexdigest()
    other_file = base.with_teacher({"seed": 0, "arch": "resnet8"}, two)
    other_seed = base.with_teacher({"seed": 4, "arch": "resnet8"}, one)
    assert other_seed.seeds.split == 4  # the split is the teacher's: its validation images were held out of its training
    for other, field in ((other_file, "teacher_sha256"), (other_seed, "split_seed")):
        with pytest.raises(UserError, match=field):
            check_settings(first.settings(), other.settings(), "s")


def test_a_timeout_without_trials_runs_until_the_time_is_up(in_tmp):
    assert quick_plan().trials == get_preset("quick").trials and quick_plan(timeout=60.0).trials is None and quick_plan(timeout=60.0, trials=5).trials == 5


def test_retrain_seeds_changed_later_stay_disjoint_from_the_search_seed_and_at_least_one(in_tmp):
    plan = quick_plan(seed=3)
    assert plan.with_retrain_seeds(2).seeds.retrain == (4, 5)
    with pytest.raises(UserError, match="--retrain-seeds must be at least 1, got 0"):
        plan.with_retrain_seeds(0)


def test_workers_with_another_brief_schedule_are_another_study(in_tmp):
    """A trial's value is its brief run's accuracy: a worker on another brief schedule would rank
    its candidates on another scale."""
    base = quick_plan()
    other = quick_plan(brief="epochs=3")
    assert base.settings()["brief"] != other.settings()["brief"]


def test_the_command_names_the_resolved_teacher_file_and_a_storage_elsewhere(in_tmp):
    teacher = in_tmp / "t.pt"
    teacher.write_bytes(b"a teacher")
    plan = quick_plan(teacher="resnet8")
    assert "--teacher resnet8" in plan.command() and "--storage" not in plan.command()  # the default storage goes without saying
    assert f"--teacher {teacher}" in plan.with_teacher({"seed": 0}, teacher).command()
    elsewhere = quick_plan(storage="sqlite:///elsewhere.db")
    assert "--storage sqlite:///elsewhere.db" in elsewhere.command()


def test_a_plan_of_a_preset_this_version_lacks_spells_its_rescreen_and_pruning(in_tmp):
    """The command reproduces the plan with this version: where today's presets no longer hold the
    plan's preset, its re-screen and pruning cannot go without saying."""
    plan = quick_plan()
    gone = dataclasses.replace(plan, preset=dataclasses.replace(plan.preset, name="retired"))
    assert "--rescreen" not in plan.command() and "prune" not in plan.command()
    assert f"--rescreen {plan.rescreen}" in gone.command() and ("--prune" if plan.prune else "--no-prune") in gone.command()
    assert gone.schedule_changes() == {}


def test_a_study_whose_plan_attribute_is_no_plan_is_refused():
    from types import SimpleNamespace

    from nas_kd.plan import PLAN_ATTR, plan_of

    for stored in ("nas-kd-plan/1", ["a", "list"], None):
        with pytest.raises(UserError, match="was not made by this version of 'nas-kd search'"):
            plan_of(SimpleNamespace(study_name="s", user_attrs={PLAN_ATTR: stored} if stored is not None else {}))
