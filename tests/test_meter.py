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
    """A stand-in latency table: 1 ms per million MACs (what is tested is the correction)."""

    threads = 1

    def predict(self, cfg, shape, classes, space=None):
        return analytic_cost(cfg, shape, classes).macs / 1e6


def measured(table_ms: float, real_ms: float):
    return SimpleNamespace(user_attrs={TABLE_LATENCY_ATTR: table_ms, "latency_ms": real_ms})


def test_the_correction_is_the_median_ratio_once_enough_trials_are_measured():
    unmeasured = SimpleNamespace(user_attrs={TABLE_LATENCY_ATTR: 1.0})
    assert latency_correction([measured(1.0, 1.5)] * (MIN_MEASURED - 1) + [unmeasured]) == 1.0
    assert latency_correction([measured(1.0, 1.5), measured(0.5, 1.0), measured(2.0, 2.0), unmeasured]) == pytest.approx(1.5)


def test_the_meter_scales_the_table_and_keeps_its_own_figure():
    meter = BudgetMeter(parse_budget("latency:1ms"), SHAPE, 10, MBV2, table=MacsTable())
    cfg = MBV2.uniform(10)
    table_ms = meter.table_latency(cfg)
    meter.correct_from([measured(1.0, 2.0), measured(0.5, 1.0)])
    assert meter.correction == 2.0 and meter.values(cfg)["latency"] == pytest.approx(2 * table_ms)
    no_latency = BudgetMeter(parse_budget("2M"), SHAPE, 10, MBV2, table=MacsTable())
    no_latency.correct_from([measured(1.0, 2.0), measured(0.5, 1.0)])
    assert no_latency.correction == 1.0


def test_proposals_follow_the_studys_measurements():
    """Measurements saying the table under-predicts by 2x: the sampler fills half the limit by the table."""
    budget = parse_budget("latency:1ms")
    sampler = BudgetSampler(optuna.samplers.RandomSampler(seed=0), MBV2, budget, SHAPE, 10, seed=0, table=MacsTable())
    study = optuna.create_study(direction="maximize", sampler=sampler)
    for ms in (0.4, 0.45):  # two measured trials: real latency twice the table's figure
        study.add_trial(optuna.trial.create_trial(value=0.5, user_attrs={TABLE_LATENCY_ATTR: ms, "latency_ms": 2 * ms}))
    table_ms = []

    def objective(trial):
        cfg = MBV2.sample(trial)
        table_ms.append(MacsTable().predict(cfg, SHAPE, 10))
        return 0.0

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study.optimize(objective, n_trials=5)
    assert all(0.85 * 0.5 <= ms <= 0.5 for ms in table_ms), table_ms
