"""`BudgetMeter`: latency predictions corrected by a study's own measurements."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest

from nas_kd.config import parse_budget
from nas_kd.cost import analytic_cost
from nas_kd.meter import MIN_MEASURED, TABLE_LATENCY_ATTR, BudgetMeter, latency_correction
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
    from nas_kd.latency import Latency

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
