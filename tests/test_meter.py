"""`BudgetMeter`: latency predictions corrected by a study's own measurements."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest

from nas_kd.config import format_count, format_quantity, parse_budget
from nas_kd.cost import analytic_cost
from nas_kd.latency import Latency
from nas_kd.meter import MIN_MEASURED, TABLE_LATENCY_ATTR, BudgetMeter, admits_largest, latency_correction
from nas_kd.proposals import BudgetSampler
from nas_kd.space import SearchSpace

MBV2 = SearchSpace.load(Path(__file__).resolve().parents[1] / "search_spaces" / "mbv2.yaml")
SHAPE = (1, 28, 28)


class MacsTable:
    """A stand-in latency table: 1 ruler per million MACs and a ruler of 1 ms, so rulers read as
    ms until a measurement says the machine was slower (what is tested is the meter)."""

    threads = 1
    ruler_ms = 1.0

    def predict_rulers(self, cfg, shape, classes, space=None):
        return analytic_cost(cfg, shape, classes).macs / 1e6


def latency(ms: float, ruler_ms: float = 1.0) -> Latency:
    """A measurement of ``ms`` (median, min and max alike) while the ruler took ``ruler_ms``."""
    return Latency(ms, ms, ms, 100, 1, "cpu", "ort", ruler_ms=ruler_ms, rulers=ms / ruler_ms)


def measured(table_rulers: float, real_rulers: float, ruler_ms: float = 1.0):
    """A trial measured at a moment when the ruler took ``ruler_ms``."""
    return SimpleNamespace(user_attrs={TABLE_LATENCY_ATTR: table_rulers, "latency_rulers": real_rulers, "latency_ms": real_rulers * ruler_ms, "latency_ruler_ms": ruler_ms})


def test_the_correction_is_the_median_ratio_once_enough_trials_are_measured():
    unmeasured = SimpleNamespace(user_attrs={TABLE_LATENCY_ATTR: 1.0})
    assert latency_correction([measured(1.0, 1.5)] * (MIN_MEASURED - 1) + [unmeasured]) == 1.0
    assert latency_correction([measured(1.0, 1.5), measured(0.5, 1.0), measured(2.0, 2.0), unmeasured]) == pytest.approx(1.5)
    # in rulers: the same student measured while the machine ran 3x slower corrects the same
    assert latency_correction([measured(1.0, 1.5, 3.0), measured(0.5, 1.0, 3.0), measured(2.0, 2.0, 0.5)]) == pytest.approx(1.5)


def test_the_meter_scales_the_table_and_keeps_its_own_figure():
    meter = BudgetMeter(parse_budget("latency:1ms"), SHAPE, 10, MBV2, table=MacsTable())
    cfg = MBV2.uniform(10)
    table = meter.table_rulers(cfg)
    meter.correct_from([measured(1.0, 2.0), measured(0.5, 1.0)])
    assert meter.correction == 2.0 and meter.values(cfg)["latency"] == pytest.approx(2 * table)
    no_latency = BudgetMeter(parse_budget("2M"), SHAPE, 10, MBV2, table=MacsTable())
    no_latency.correct_from([measured(1.0, 2.0), measured(0.5, 1.0)])
    assert no_latency.correction == 1.0


def test_limits_are_judged_at_the_slowest_speed_seen():
    """A student measured at 0.8 ms while the machine ran fast is over a 1 ms limit once the study
    has seen the ruler take twice as long: at that speed it would take 1.6 ms."""

    meter = BudgetMeter(parse_budget("latency:1ms"), SHAPE, 10, MBV2, table=MacsTable())
    cfg = MBV2.uniform(10)
    fast = Latency(0.8, 0.7, 0.9, 100, 1, "cpu", "ort", ruler_ms=1.0, rulers=0.8)
    assert meter.at_slowest(fast) == pytest.approx(0.8)  # nothing slower seen yet
    meter.correct_from([measured(1.0, 1.0, 2.0), measured(1.0, 1.0, 1.0)])  # one measurement at half speed
    assert meter.slowest_ms() == 2.0
    assert meter.at_slowest(fast) == pytest.approx(1.6) and not meter.budget.fits(macs=0, params=0, latency=meter.at_slowest(fast))
    assert meter.values(cfg)["latency"] == pytest.approx(2.0 * meter.table_rulers(cfg))  # predictions too
    # timed alone at a moment slower still than the ruler showed: the time measured alone stands
    unlucky = Latency(1.2, 1.1, 1.3, 100, 1, "cpu", "ort", ruler_ms=1.0, rulers=0.5)
    assert meter.at_slowest(unlucky) == pytest.approx(1.2)


def test_a_winner_check_is_judged_at_the_studys_slowest_speed():
    from nas_kd.finalize import LATENCY_CHECKS_ATTR, measured_latencies

    study = optuna.create_study(direction="maximize")
    for rulers, ruler_ms in ((0.5, 1.0), (0.4, 2.5)):
        study.add_trial(optuna.trial.create_trial(value=0.5, user_attrs={"latency_ms": rulers * ruler_ms, "latency_rulers": rulers, "latency_ruler_ms": ruler_ms}))
    study.add_trial(optuna.trial.create_trial(value=0.6, user_attrs={}))
    study.set_user_attr(LATENCY_CHECKS_ATTR, {"2": {"ms": 0.3, "ruler_ms": 1.0, "rulers": 0.3, "slowest_ruler_ms": 1.0}})
    got = measured_latencies(study)
    assert got == pytest.approx({0: 0.5 * 2.5, 1: 0.4 * 2.5, 2: 0.3 * 2.5})
    study.set_user_attr(LATENCY_CHECKS_ATTR, {"2": {"ms": 0.9, "ruler_ms": 1.0, "rulers": 0.3, "slowest_ruler_ms": 1.0}})
    assert measured_latencies(study)[2] == pytest.approx(0.9)  # never below the time measured alone
    study.set_user_attr(LATENCY_CHECKS_ATTR, {"2": 0.3})  # a check from before rulers counts as it was taken
    assert measured_latencies(study)[2] == 0.3


def test_proposals_follow_the_studys_measurements():
    """Measurements saying the table under-predicts by 2x: the sampler fills half the limit by the table."""
    budget = parse_budget("latency:1ms")
    sampler = BudgetSampler(optuna.samplers.RandomSampler(seed=0), MBV2, budget, SHAPE, 10, seed=0, table=MacsTable())
    study = optuna.create_study(direction="maximize", sampler=sampler)
    for ms in (0.4, 0.45):  # two measured trials: real latency twice the table's figure
        study.add_trial(optuna.trial.create_trial(value=0.5, user_attrs=measured(ms, 2 * ms).user_attrs))
    table_ms = []

    def objective(trial):
        cfg = MBV2.sample(trial)
        table_ms.append(MacsTable().predict_rulers(cfg, SHAPE, 10))
        return 0.0

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study.optimize(objective, n_trials=5)
    assert all(0.85 * 0.5 <= ms <= 0.5 for ms in table_ms), table_ms


def test_a_baseline_chosen_after_a_search_is_judged_at_the_studys_slowest_speed():
    """The finalize step's uniform baseline under a latency limit: once the study has seen the
    machine at half speed, the baseline is the largest uniform member that fits at that speed."""
    budget = parse_budget("latency:2ms")  # MacsTable: 2M MACs at full speed
    fast = MBV2.baseline(budget, SHAPE, 10, table=MacsTable())
    slow = MBV2.baseline(budget, SHAPE, 10, trials=[SimpleNamespace(user_attrs={"slowest_ruler_ms": 2.0})], table=MacsTable())
    fast_macs, slow_macs = (analytic_cost(c, SHAPE, 10).macs for c in (fast, slow))
    assert slow_macs <= 1e6 < fast_macs <= 2e6


def test_a_budget_binds_unless_the_largest_member_fits_every_limit():
    """MacsTable: the largest mbv2 member (26.67M MACs) predicts 26.67 ms. A budget binds while any
    one of its limits is below the largest member's value."""
    largest = analytic_cost(MBV2.largest(), SHAPE, 10)
    over = lambda text: admits_largest(BudgetMeter(parse_budget(text), SHAPE, 10, MBV2, table=MacsTable()), MBV2)  # noqa: E731
    assert over("latency:27ms") == f"budget latency <= 27 ms admits the largest member of mbv2 ({format_count(largest.macs)} MACs, {format_count(largest.params)} params, {format_quantity('latency', largest.macs / 1e6)} latency): it does not bind"
    assert over("latency:26ms") is None
    assert over("30M") is not None and over("20M") is None
    assert over("30M,latency:20ms") is None and over("30M,memory:1M") is not None


@pytest.fixture
def fake_latency(monkeypatch):
    """MacsTable as the machine's table, and measurements of 1 ruler (1 ms) per million MACs times
    a per-config factor (``slow``: config JSON -> factor); ``calls`` counts them."""
    import nas_kd.latency

    slow: dict[str, float] = {}
    calls: list[str] = []

    def measure(cfg, shape, classes, threads=1, **_):
        calls.append(cfg.to_json())
        rulers = slow.get(cfg.to_json(), 1.0) * analytic_cost(cfg, shape, classes).macs / 1e6
        return Latency(rulers, rulers, rulers, 100, 1, "cpu", "ort", ruler_ms=1.0, rulers=rulers)

    monkeypatch.setattr(nas_kd.latency, "LatencyTable", MacsTable)
    monkeypatch.setattr(nas_kd.latency, "measure_latency", measure)
    return SimpleNamespace(slow=slow, calls=calls)


def test_the_baseline_is_held_to_the_winners_latency_rule(fake_latency):
    """latency:2ms, MacsTable: the largest uniform member under 2M MACs fits by prediction. Measured
    1.5x slower (over the limit) it is passed over, recorded, and the next smaller member, which
    measures within the limit, is the baseline; a resumed finalize measures nothing again."""
    from nas_kd.finalize import BASELINE_CHECKS_ATTR, confirm_baseline

    plan = SimpleNamespace(budget=parse_budget("latency:2ms"), input_shape=SHAPE, num_classes=10, space=MBV2)
    predicted = MBV2.baseline(plan.budget, SHAPE, 10, table=MacsTable())
    smaller = MBV2.baseline(plan.budget, SHAPE, 10, table=MacsTable(), exclude={predicted.to_json()})
    assert analytic_cost(smaller, SHAPE, 10).macs < analytic_cost(predicted, SHAPE, 10).macs <= 2e6
    fake_latency.slow[predicted.to_json()] = 1.5
    study, lines, passed = optuna.create_study(direction="maximize"), [], []
    assert confirm_baseline(study, plan, lines.append, passed) == smaller
    assert passed == [{"describe": predicted.describe(), "latency_ms": pytest.approx(1.5 * analytic_cost(predicted, SHAPE, 10).macs / 1e6), "trial": None}]
    assert fake_latency.calls == [predicted.to_json(), predicted.to_json(), smaller.to_json()]  # over: confirmed by a second measurement
    assert set(study.user_attrs[BASELINE_CHECKS_ATTR]) == {predicted.to_json(), smaller.to_json()}
    assert "over the limit, next smaller" in lines[0] and lines[1].endswith("(limit 2): fits")
    assert confirm_baseline(study, plan, lines.append) == smaller and len(fake_latency.calls) == 3  # resumed: no new measurement
    # no latency limit: the prediction's choice, nothing measured
    assert confirm_baseline(study, SimpleNamespace(**{**vars(plan), "budget": parse_budget("2M")}), lines.append) == MBV2.baseline(parse_budget("2M"), SHAPE, 10)
    assert len(fake_latency.calls) == 3


def test_a_baseline_the_search_measured_over_the_limit_is_not_the_baseline(fake_latency):
    from nas_kd.finalize import confirm_baseline

    plan = SimpleNamespace(budget=parse_budget("latency:2ms"), input_shape=SHAPE, num_classes=10, space=MBV2)
    predicted = MBV2.baseline(plan.budget, SHAPE, 10, table=MacsTable())
    study = optuna.create_study(direction="maximize")
    study.add_trial(optuna.trial.create_trial(value=0.8, user_attrs={"config": predicted.to_json(), "baseline": True, "latency_ms": 2.4, "latency_rulers": 2.4, "latency_ruler_ms": 1.0}))
    passed = []
    base = confirm_baseline(study, plan, lambda _: None, passed)
    assert base is not None and base != predicted and fake_latency.calls == [base.to_json()]  # the trial's measurement counts: not measured again
    assert passed == [{"describe": predicted.describe(), "latency_ms": 2.4, "trial": 0}]


def test_no_uniform_member_within_the_measured_limit_means_no_baseline(fake_latency):
    from nas_kd.finalize import confirm_baseline

    plan = SimpleNamespace(budget=parse_budget("latency:2ms"), input_shape=SHAPE, num_classes=10, space=MBV2)
    for member in MBV2.uniform_members():
        fake_latency.slow[member.to_json()] = 100.0
    lines = []
    assert confirm_baseline(optuna.create_study(direction="maximize"), plan, lines.append) is None
    assert lines[-1].startswith("finalize: no uniform member of mbv2 meets the latency limit (2 ms) when measured")


def test_a_baseline_measured_within_the_limit_as_a_trial_or_winner_is_not_measured_again(fake_latency):
    """The winner is the uniform member itself, confirmed within the limit by `confirm_winner`'s
    check: measuring it again (here 1.5x slower, over the limit) must not set the same student
    aside as a baseline while it stands as the winner."""
    from nas_kd.finalize import LATENCY_CHECKS_ATTR, confirm_baseline

    plan = SimpleNamespace(budget=parse_budget("latency:2ms"), input_shape=SHAPE, num_classes=10, space=MBV2)
    predicted = MBV2.baseline(plan.budget, SHAPE, 10, table=MacsTable())
    fake_latency.slow[predicted.to_json()] = 1.5
    study = optuna.create_study(direction="maximize")
    study.add_trial(optuna.trial.create_trial(value=0.8, user_attrs={"config": predicted.to_json(), "baseline": True}))
    study.set_user_attr(LATENCY_CHECKS_ATTR, {"0": {"ms": 1.9, "ruler_ms": 1.0, "rulers": 1.9, "slowest_ruler_ms": 1.0}})
    lines, passed = [], []
    assert confirm_baseline(study, plan, lines.append, passed) == predicted
    assert fake_latency.calls == [] and passed == []
    assert lines == ["finalize: uniform baseline " + predicted.describe() + " was measured within the latency limit in trial 0 (1.900 ms at the slowest speed seen, limit 2): fits"]


def test_a_larger_uniform_member_measured_within_the_limit_outranks_the_predictions_choice(fake_latency):
    """The search enqueued the largest uniform member that fitted by prediction, measured it within
    the limit and it won; by the end the study's correction predicts it over. The baseline is
    still that member (measured, not predicted), not the smaller one the prediction now picks:
    else the report compares the hand-scaled answer with a smaller copy of itself."""
    from nas_kd.finalize import LATENCY_CHECKS_ATTR, confirm_baseline

    plan = SimpleNamespace(budget=parse_budget("latency:2ms"), input_shape=SHAPE, num_classes=10, space=MBV2)
    predicted = MBV2.baseline(plan.budget, SHAPE, 10, table=MacsTable())
    larger = min((c for c in MBV2.uniform_members() if analytic_cost(c, SHAPE, 10).macs > analytic_cost(predicted, SHAPE, 10).macs), key=lambda c: analytic_cost(c, SHAPE, 10).macs)
    study = optuna.create_study(direction="maximize")
    study.add_trial(optuna.trial.create_trial(value=0.8, user_attrs={"config": larger.to_json(), "baseline": True}))
    study.set_user_attr(LATENCY_CHECKS_ATTR, {"0": {"ms": 1.95, "ruler_ms": 1.0, "rulers": 1.95, "slowest_ruler_ms": 1.0}})
    lines = []
    assert confirm_baseline(study, plan, lines.append) == larger
    assert fake_latency.calls == [] and "larger than the prediction's choice" in lines[-1]
    # measured over the limit instead: the prediction's choice, measured now
    study.set_user_attr(LATENCY_CHECKS_ATTR, {"0": {"ms": 2.05, "ruler_ms": 1.0, "rulers": 2.05, "slowest_ruler_ms": 1.0}})
    assert confirm_baseline(study, plan, lines.append) == predicted and fake_latency.calls == [predicted.to_json()]


def test_a_larger_uniform_member_a_trial_measured_over_is_named_though_the_prediction_never_proposed_it(fake_latency):
    """The search enqueued a uniform member the table then predicted within the limit; its trial
    measured it over, and by the end the prediction puts it over too, so the choice starts below
    it. The report's "larger members passed over" still names it, with its trial."""
    from nas_kd.finalize import confirm_baseline

    plan = SimpleNamespace(budget=parse_budget("latency:2ms"), input_shape=SHAPE, num_classes=10, space=MBV2)
    predicted = MBV2.baseline(plan.budget, SHAPE, 10, table=MacsTable())
    larger = min((c for c in MBV2.uniform_members() if analytic_cost(c, SHAPE, 10).macs > analytic_cost(predicted, SHAPE, 10).macs), key=lambda c: analytic_cost(c, SHAPE, 10).macs)
    study = optuna.create_study(direction="maximize")
    study.add_trial(optuna.trial.create_trial(value=0.8, user_attrs={"config": larger.to_json(), "baseline": True, "latency_ms": 2.4, "latency_rulers": 2.4, "latency_ruler_ms": 1.0}))
    passed = []
    assert confirm_baseline(study, plan, lambda _: None, passed) == predicted
    assert passed == [{"describe": larger.describe(), "latency_ms": 2.4, "trial": 0}]


def test_the_fill_is_the_binding_limits_share():
    """With two limits the fill is the larger share: a student at 60% of one and 110% of the
    other is over budget (the sampler's repair aims proposals into [min_fill, 1] by it)."""
    from nas_kd.meter import fill_of

    budget = parse_budget("memory:32k,size:64k")
    assert fill_of(budget, 0, 0, memory=0.6 * 32_000, size=1.1 * 64_000) == pytest.approx(1.1)
    assert fill_of(budget, 0, 0, memory=0.9 * 32_000, size=0.5 * 64_000) == pytest.approx(0.9)
    meter = BudgetMeter(budget, SHAPE, 10, MBV2)
    cfg = MBV2.uniform(10)
    values = meter.values(cfg)
    assert meter.fill(cfg) == pytest.approx(max(values["memory"] / 32_000, values["size"] / 64_000))


def test_the_tables_own_ruler_counts_among_the_speeds_seen():
    """The table was timed on this machine too: measurements all taken while it ran fast do not
    make the limit look looser than the table's own ruler timing says."""
    slow_table = MacsTable()
    slow_table.ruler_ms = 2.0
    meter = BudgetMeter(parse_budget("latency:1ms"), SHAPE, 10, MBV2, table=slow_table)
    meter.correct_from([measured(1.0, 1.0, 1.0), measured(0.5, 0.5, 1.0)])
    assert meter.slowest_ms() == 2.0


def test_a_measurement_at_a_slower_moment_slows_every_later_judgement():
    meter = BudgetMeter(parse_budget("latency:1ms"), SHAPE, 10, MBV2, table=MacsTable())
    cfg = MBV2.uniform(10)
    before = meter.values(cfg)["latency"]
    meter.at_slowest(Latency(0.9, 0.8, 1.0, 100, 1, "cpu", "ort", ruler_ms=3.0, rulers=0.3))
    assert meter.slowest_ms() == 3.0 and meter.values(cfg)["latency"] == pytest.approx(3.0 * before)


def test_only_predictions_near_the_limit_are_measured():
    from nas_kd.meter import MEASURE_ABOVE

    meter = BudgetMeter(parse_budget("latency:1ms"), SHAPE, 10, MBV2, table=MacsTable())
    assert not meter.needs_measuring(0.5 * MEASURE_ABOVE)  # far below: taken as predicted
    assert meter.needs_measuring(MEASURE_ABOVE) and meter.needs_measuring(1.0)
    assert not meter.needs_measuring(1.01)  # over the limit: rejected without measuring
    assert not BudgetMeter(parse_budget("2M"), SHAPE, 10, MBV2).needs_measuring(0.9)  # no latency limit


def test_a_measurement_over_the_limit_is_taken_again_and_the_lower_kept(monkeypatch):
    """Interference only adds time: a disturbed measurement over the limit does not reject a
    student that measures within it at once after; a student over it twice stays over; one within
    it is measured once; the discarded measurement's slow ruler is not taken as the machine's speed."""
    import nas_kd.latency

    queue: list[Latency] = []
    monkeypatch.setattr(nas_kd.latency, "measure_latency", lambda *a, **k: queue.pop(0))
    cfg = MBV2.uniform(10)

    def judge(*taken: Latency) -> tuple[float, int, float]:
        meter = BudgetMeter(parse_budget("latency:1ms"), SHAPE, 10, MBV2, table=MacsTable())
        queue[:] = [*taken, latency(0.1)]  # a third measurement, never to be taken
        kept, ms = meter.measure_for_limit(cfg)
        assert ms == pytest.approx(meter.at_slowest(kept))
        return ms, len(taken) + 1 - len(queue), meter.slowest_ms()

    assert judge(latency(2.5, ruler_ms=3.0), latency(0.8)) == (pytest.approx(0.8), 2, 1.0)
    assert judge(latency(0.8), latency(2.5)) == (pytest.approx(0.8), 1, 1.0)  # within at once: one measurement
    assert judge(latency(1.5), latency(1.2)) == (pytest.approx(1.2), 2, 1.0)  # over twice: the lower, still over
    assert judge(latency(1.2), latency(1.5, ruler_ms=2.0)) == (pytest.approx(1.2), 2, 1.0)
    # over only at its own moment's slow speed (0.6 rulers, the ruler at 2 ms): over, so taken again
    at_a_slow_moment = Latency(0.6, 0.6, 0.6, 100, 1, "cpu", "ort", ruler_ms=2.0, rulers=0.6)
    assert judge(at_a_slow_moment, latency(0.8)) == (pytest.approx(0.8), 2, 1.0)


def test_one_measurement_does_not_correct_and_one_disturbed_one_does_not_skew_the_correction():
    """Two measured trials before the table's predictions are corrected, and their median ratio:
    a measurement taken while something else ran (5x here) moves a mean, not the median."""
    assert latency_correction([measured(1.0, 1.5)]) == 1.0
    assert latency_correction([measured(1.0, 1.0), measured(1.0, 1.2), measured(1.0, 5.0)]) == pytest.approx(1.2)


def test_a_study_read_again_keeps_the_slowest_speed_the_meter_has_seen():
    meter = BudgetMeter(parse_budget("latency:1ms"), SHAPE, 10, MBV2, table=MacsTable())
    meter.at_slowest(Latency(0.9, 0.8, 1.0, 100, 1, "cpu", "ort", ruler_ms=3.0, rulers=0.3))  # a winner check, say
    meter.correct_from([measured(1.0, 1.0, 1.5), measured(0.5, 0.5, 1.5)])
    assert meter.slowest_ms() == 3.0


def test_students_are_measured_on_the_tables_thread_count(monkeypatch):
    """The table's predictions are in rulers timed on its thread count: a measurement on another
    would compare a student with a ruler it was not timed against."""
    import nas_kd.latency

    seen = []
    monkeypatch.setattr(nas_kd.latency, "measure_latency", lambda *a, threads=None, **k: seen.append(threads) or latency(0.5))
    table = MacsTable()
    table.threads = 3
    BudgetMeter(parse_budget("latency:1ms"), SHAPE, 10, MBV2, table=table).measure_for_limit(MBV2.uniform(0))
    assert seen == [3]


def test_a_measurement_exactly_at_the_limit_is_within_it_and_not_taken_again(monkeypatch):
    import nas_kd.latency

    queue = [latency(1.0), latency(0.5)]
    monkeypatch.setattr(nas_kd.latency, "measure_latency", lambda *a, **k: queue.pop(0))
    kept, ms = BudgetMeter(parse_budget("latency:1ms"), SHAPE, 10, MBV2, table=MacsTable()).measure_for_limit(MBV2.uniform(0))
    assert ms == 1.0 and len(queue) == 1
