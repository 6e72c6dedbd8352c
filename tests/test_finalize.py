"""`nas_kd.finalize` as a resumable job: each finished retrain run kept as it ends, a second
finalize training only what is missing, and ``start_by`` spreading the re-screen and the retrain
over several calls (the GPU bench's device calls) without training any run twice. The distiller
is a fast fake; the students are real (their weights are what a kept run must give back)."""

import json
import shutil
import zlib

import pytest
import torch

import nas_kd.distill
import nas_kd.finalize
from nas_kd.finalize import FINAL_DIR, RUNS_DIR, Unfinished, finalize
from nas_kd.search import SearchOptions, run_search
from tests.test_search import SPACE, TINY_TEACHER, fake_metrics


def quiet(*_):
    pass


@pytest.fixture
def study(in_tmp, monkeypatch):
    """A finished 4-trial search (re-screen of 3, 2 retrain seeds, baselines) on a fake distiller
    that records every run and advances a fake clock by 10 s per run; returns (runs, clock)."""
    from nas_kd.models.teachers import ensure_teacher

    (in_tmp / "mini.yaml").write_text(SPACE)
    _, _, teacher = ensure_teacher("synthetic", "resnet8", TINY_TEACHER, preset="test", device=torch.device("cpu"), log=quiet)
    runs, clock = [], [0.0]
    from nas_kd.space import SearchSpace

    uniform = SearchSpace.load("mini.yaml").largest().describe()  # the baseline: made to lose

    def fake_train(student, teacher, splits, schedule, mode, *, device, seed, epoch_callback=None, evaluate_test=False, **kw):
        runs.append((student.config.describe(), getattr(mode, "name", mode), seed, evaluate_test))
        clock[0] += 10.0
        name = student.config.describe()
        acc = 0.5 + zlib.crc32(name.encode()) % 97 / 1000 + seed / 10000 - 0.2 * (name == uniform)
        return fake_metrics(schedule, acc, epoch_callback, evaluate_test)

    monkeypatch.setattr(nas_kd.distill, "train", fake_train)
    monkeypatch.setattr(nas_kd.finalize, "_now", lambda: clock[0])
    opts = SearchOptions(budget="10M", space="mini.yaml", dataset="synthetic", teacher=str(teacher), mode="kd", trials=4, study="mini", preset="quick", device="cpu", retrain_seeds=2, rescreen=3, progress=False)
    run_search(opts, log=quiet, finish=False)
    runs.clear()
    return runs, clock


def _figures(final: dict) -> list:
    rows = [("winner", r["seed"], r["val_accuracy"], r["test_accuracy"]) for r in final["winner"]["runs"]]
    for mode, summary in final["baselines"]["modes"].items():
        rows += [(mode, r["seed"], r["val_accuracy"], r["test_accuracy"]) for r in summary["runs"]]
    return rows


def test_a_second_finalize_trains_only_the_runs_it_lacks(study, in_tmp):
    runs, _ = study
    final_dir = in_tmp / "runs" / "mini" / FINAL_DIR
    first = finalize("mini", jobs=1, log=quiet)
    assert first["winner"]["config"] != first["baselines"]["config"]
    retrain = [r for r in runs if r[3]]
    assert len(retrain) == len(list((final_dir / RUNS_DIR).glob("*.pt"))) == 6  # winner, baseline kd and ce, 2 seeds each
    weights = torch.load(final_dir / "winner.pt", weights_only=True)
    # The final report gone (an interrupted finalize never wrote it): nothing trains again.
    (final_dir / "final.json").unlink()
    (final_dir / "winner.pt").unlink()
    runs.clear()
    lines: list[str] = []
    again = finalize("mini", jobs=1, log=lines.append)
    assert runs == [] and "finalize: 6 of 6 runs kept" in "\n".join(lines)
    assert _figures(again) == _figures(first)
    kept = torch.load(final_dir / "winner.pt", weights_only=True)
    assert kept.keys() == weights.keys() and all(torch.equal(kept[k], weights[k]) for k in weights)
    # One more seed: only its three runs train.
    runs.clear()
    more = finalize("mini", retrain_seeds=3, jobs=1, log=quiet)
    assert len(runs) == 3 and len({r[2] for r in runs}) == 1 and all(r[3] for r in runs)
    assert _figures(more)[:2] == _figures(first)[:2]


def test_start_by_spreads_the_rescreen_and_the_retrain_over_calls_and_trains_no_run_twice(study, in_tmp):
    runs, clock = study
    calls, left = 0, []
    while True:
        calls += 1
        try:
            # Each call may start runs for 15 fake seconds: two runs (at +0 and +10), then stops.
            spread = finalize("mini", jobs=1, log=quiet, start_by=clock[0] + 15.0)
            break
        except Unfinished as e:
            assert (e.rescreen_left > 0) != (e.retrain_left is not None)
            left.append(("rescreen", e.rescreen_left) if e.rescreen_left else ("retrain", e.retrain_left))
        assert calls < 10
    # What each call said was left: the re-screen first (its 3 or 4 runs), then the retrain's 6.
    kinds = [k for k, _ in left]
    assert kinds[0] == "rescreen" and kinds == sorted(kinds, key=("rescreen", "retrain").index) and left[-1] == ("retrain", 2)
    trained = list(runs)
    assert len(trained) == len(set(trained)), "a run trained twice"
    assert sum(not r[3] for r in trained) in (3, 4) and sum(r[3] for r in trained) == 6  # re-screen (top 3, the baseline), retrain
    assert calls == -(-len(trained) // 2)  # two runs per call, every call used
    # The same study finalized in one go gives the same figures and winner.
    shutil.rmtree(in_tmp / "runs" / "mini" / FINAL_DIR)
    from nas_kd.study import load_study

    st = load_study("mini")
    st.set_user_attr("nas_kd_rescreen", {})
    runs.clear()
    whole = finalize("mini", jobs=1, log=quiet)
    assert sorted(runs) == sorted(trained)
    assert _figures(whole) == _figures(spread) and whole["winner"]["trial"] == spread["winner"]["trial"]


def test_a_passed_start_by_trains_nothing_and_fills_nothing(study, monkeypatch):
    """Neither before the re-screen nor, once it is done, before the retrain: the teacher's
    outputs (a pass over the data, gigabytes on a GPU) are not filled for runs that cannot start."""
    runs, clock = study
    filled = []
    real_pass = nas_kd.finalize._teacher_pass
    monkeypatch.setattr(nas_kd.finalize, "_teacher_pass", lambda *a, **k: filled.append(1) or real_pass(*a, **k))
    for jobs in (1, 2):  # 2: the re-screen's runs would go to worker processes, the outputs to a file for them
        with pytest.raises(Unfinished) as caught:
            finalize("mini", jobs=jobs, log=quiet, start_by=clock[0] - 1.0)
        assert caught.value.rescreen_left in (3, 4) and runs == [] and filled == []
    while True:  # the re-screen, a run per call
        with pytest.raises(Unfinished) as caught:
            finalize("mini", jobs=1, log=quiet, start_by=clock[0] + 5.0)
        if caught.value.retrain_left is not None:
            break
    assert not any(r[3] for r in runs)  # nothing of the retrain trained yet
    filled.clear()
    for jobs in (1, 2):
        with pytest.raises(Unfinished) as caught:
            finalize("mini", jobs=jobs, log=quiet, start_by=clock[0] - 1.0)
        assert caught.value.retrain_left == 6 and filled == [] and not any(r[3] for r in runs)


def test_a_worker_starts_nothing_once_start_by_has_passed(study):
    from nas_kd.finalize import Retrain, _run_in_worker, _screen_in_worker
    from nas_kd.plan import plan_of
    from nas_kd.study import load_study

    runs, clock = study
    plan = plan_of(load_study("mini"))
    config = load_study("mini").trials[0].user_attrs["config"]
    assert _run_in_worker(plan.to_dict(), "cpu", None, clock[0] - 1.0, Retrain("winner", config, "kd", 1)) is None
    assert _screen_in_worker(plan.to_dict(), "cpu", None, clock[0] - 1.0, config) is None
    assert runs == []
    assert _run_in_worker(plan.to_dict(), "cpu", None, clock[0] + 1.0, Retrain("winner", config, "kd", 1))["record"]["seed"] == 1
    assert len(runs) == 1


def test_a_kept_run_serves_only_the_run_it_was(study, in_tmp):
    from nas_kd.finalize import Retrain, _keep, _kept, _kept_path, _run_key
    from nas_kd.plan import plan_of
    from nas_kd.study import load_study

    plan = plan_of(load_study("mini"))
    config = load_study("mini").trials[0].user_attrs["config"]
    out = in_tmp / "kept"
    state = {"w": torch.ones(2)}
    baseline = Retrain("baseline", config, "kd", 1)
    _keep(out, baseline, plan, {"record": {"seed": 1, "val_accuracy": 0.5}, "state": state})
    assert _kept(out, baseline, plan) == {"record": {"seed": 1, "val_accuracy": 0.5}, "state": None}  # a baseline's weights are not kept
    assert _kept(out, Retrain("winner", config, "kd", 1), plan) is None  # a winner needs them
    assert _kept(out, Retrain("baseline", config, "ce", 1), plan) is None  # another mode
    assert _kept(out, Retrain("baseline", config, "kd", 2), plan) is None  # another seed
    # A file copied under another seed's name is not taken for that seed's run.
    third = Retrain("baseline", config, "kd", 3)
    shutil.copy(_kept_path(out, baseline, _run_key(baseline, plan)), _kept_path(out, third, _run_key(third, plan)))
    assert _kept(out, third, plan) is None
    winner = Retrain("winner", config, "kd", 2)
    _keep(out, winner, plan, {"record": {"seed": 2}, "state": state})
    assert torch.equal(_kept(out, winner, plan)["state"]["w"], state["w"])
    # A file whose key is another run's (renamed, or from an older version) is not taken for this one.
    path = next(p for p in (out / RUNS_DIR).glob("*.pt") if "-s2-" in p.name)
    stored = torch.load(path, weights_only=True)
    stored["key"] = json.dumps({**json.loads(stored["key"]), "schedule": {}}, sort_keys=True)
    torch.save(stored, path)
    assert _kept(out, winner, plan) is None


def test_the_shipped_weights_are_the_seed_with_the_best_validation_accuracy(study, in_tmp):
    """winner.pt is chosen on validation (the test split never chooses anything): here the fake
    scores the higher seed higher, and the students' weights differ by seed."""
    from nas_kd.finalize import Retrain, _kept
    from nas_kd.models.student import StudentConfig
    from nas_kd.plan import plan_of
    from nas_kd.study import load_study

    final = finalize("mini", jobs=1, log=quiet)
    plan = plan_of(load_study("mini"))
    best = max(final["winner"]["runs"], key=lambda r: r["val_accuracy"])["seed"]
    assert best == max(plan.seeds.retrain)
    kept = _kept(in_tmp / "runs" / "mini" / FINAL_DIR, Retrain("winner", StudentConfig.from_dict(final["winner"]["config"]).to_json(), "kd", best), plan)
    shipped = torch.load(in_tmp / "runs" / "mini" / FINAL_DIR / "winner.pt", weights_only=True)
    assert shipped.keys() == kept["state"].keys() and all(torch.equal(shipped[k], kept["state"][k]) for k in shipped)


def test_the_spread_of_test_accuracy_is_the_sample_standard_deviation():
    from nas_kd.finalize import summarise

    out = summarise([{"test_accuracy": 0.5, "val_accuracy": 0.4}, {"test_accuracy": 0.7, "val_accuracy": 0.6}])
    assert out["test_mean"] == pytest.approx(0.6) and out["val_mean"] == pytest.approx(0.5)
    assert out["test_std"] == pytest.approx(0.2 / 2**0.5)  # n - 1 in the denominator
    assert summarise([{"test_accuracy": 0.5, "val_accuracy": 0.4}])["test_std"] is None


def test_a_teacher_that_is_not_the_searched_one_is_refused(study, in_tmp, monkeypatch):
    """The recorded teacher file gone, the registry's is resolved again: one that differs (another
    training) would make the retrain distil from another teacher than the search did."""
    import nas_kd.models.teachers
    from nas_kd.errors import UserError
    from nas_kd.finalize import load_planned_teacher
    from nas_kd.plan import plan_of
    from nas_kd.study import load_study

    plan = plan_of(load_study("mini"))
    (in_tmp / plan.teacher.path).unlink()
    other = in_tmp / "other.pt"
    other.write_bytes(b"another teacher")
    monkeypatch.setattr(nas_kd.models.teachers, "resolve_teacher", lambda *a, **k: (object(), {}, other))
    with pytest.raises(UserError, match="is not the one study 'mini' was searched with"):
        load_planned_teacher(plan, torch.device("cpu"), quiet)


def test_the_searchs_teacher_outputs_serve_the_retrain_only_if_they_hold_what_its_mode_reads(in_tmp):
    from nas_kd.config import Schedule
    from nas_kd.data import load_splits
    from nas_kd.distill import TeacherCache, get_mode
    from nas_kd.finalize import _teacher_pass
    from nas_kd.models.teachers import build_teacher
    from nas_kd.train import make_loaders

    cpu = torch.device("cpu")
    splits = load_splits("synthetic", train_subset=96)
    teacher = build_teacher("resnet8", 1, 10).eval().requires_grad_(False)
    schedule = Schedule(epochs=1, batch_size=32, lr=0.05, warmup_epochs=0, crop=False)
    kd_cache = TeacherCache(teacher, make_loaders(splits, batch_size=32, device=cpu, seed=0, crop=False)[0], "kd", num_classes=10)
    assert _teacher_pass(teacher, splits, schedule, get_mode("kd"), cpu, reuse=kd_cache)["teacher_cache"] is kd_cache
    own = _teacher_pass(teacher, splits, schedule, get_mode("ktan"), cpu, reuse=kd_cache)["teacher_cache"]
    assert own is not kd_cache and own.covers(get_mode("ktan"))
