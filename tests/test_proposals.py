"""`BudgetSampler`: proposals repaired into the budget band, distinct, the sampler still learning."""

import statistics
from pathlib import Path

import optuna
import pytest

from nas_kd.config import parse_budget
from nas_kd.cost import analytic_cost
from nas_kd.proposals import BudgetSampler, fill_of
from nas_kd.search import make_sampler
from nas_kd.space import SearchSpace

MBV2 = SearchSpace.load(Path(__file__).resolve().parents[1] / "search_spaces" / "mbv2.yaml")
SHAPE = (1, 28, 28)


def run_study(sampler_name: str, budget_text: str, trials: int, min_fill: float = 0.85):
    budget = parse_budget(budget_text)
    sampler = BudgetSampler(make_sampler(sampler_name, 0, False), MBV2, budget, SHAPE, 10, min_fill=min_fill, seed=0)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    fills = []

    def objective(trial):
        cfg = MBV2.sample(trial)
        cost = analytic_cost(cfg, SHAPE, 10)
        fills.append(fill_of(budget, cost.macs, cost.params))
        return -abs(cost.params - 20_000)  # something for TPE to learn

    study.optimize(objective, n_trials=trials)
    return study, sampler, fills


@pytest.mark.parametrize("sampler_name", ["random", "tpe", "nsga2"])
@pytest.mark.parametrize("budget_text", ["0.5M", "2M", "macs:2M,params:15k"])
def test_every_proposal_fits_fills_the_budget_and_is_new(sampler_name, budget_text):
    study, sampler, fills = run_study(sampler_name, budget_text, 20)
    assert len(fills) == 20 and max(fills) <= 1.0  # never over budget: nothing to reject
    assert statistics.median(fills) >= 0.85 and min(fills) >= 0.85
    assert len({tuple(sorted(t.params.items())) for t in study.trials}) == 20
    c = sampler.counts
    assert c.proposals == 20 and c.exhausted == 0
    # A repair is a handful of cost evaluations (~0.2 ms each here), not a walk one step at a
    # time (a 10x-over draw at 0.5M would take ~30); the time bound is loose for a loaded CI box.
    assert c.evaluations / c.proposals < 12 and 1e3 * c.seconds / c.proposals < 100, c


def test_raw_proposals_would_mostly_be_rejected():
    """What the repair is for: at 0.5M about 1 in 1,400 uniform draws fits at all."""
    import random

    rng = random.Random(0)
    budget = parse_budget("0.5M")
    fits = sum(fill_of(budget, *(lambda c: (c.macs, c.params))(analytic_cost(MBV2.random_config(rng), SHAPE, 10))) <= 1.0 for _ in range(300))
    assert fits <= 3


def test_min_fill_zero_keeps_the_sampler_proposal_when_it_fits():
    budget = parse_budget("26M")  # above the largest member: every proposal fits as drawn
    sampler = BudgetSampler(optuna.samplers.RandomSampler(seed=1), MBV2, budget, SHAPE, 10, min_fill=0.0)
    proposal = MBV2.params_of(MBV2.uniform(3))
    assert sampler.repair(dict(proposal), seen=set()) == proposal and sampler.counts.over_budget == 0


def test_a_budget_above_the_space_is_filled_relative_to_its_largest_member():
    _, sampler, fills = run_study("random", "1G", 5)
    largest = analytic_cost(MBV2.largest(), SHAPE, 10).macs / 1e9
    assert min(fills) >= 0.85 * largest and sampler.counts.exhausted == 0
    # The band is reached, not given up on: a target of 0.85 of the 1G budget would leave every
    # proposal grown to the largest members and counted below the band.
    assert sampler.counts.unfillable == 0 and min(fills) < 0.999 * largest


def test_a_band_the_space_cannot_reach_is_counted_and_said():
    """With min-fill 0.9999 few students fit the band (the choices are discrete): such a proposal
    is kept as close as it came, counted, and the progress line says so."""
    _, sampler, fills = run_study("random", "2M", 5, min_fill=0.9999)
    assert max(fills) <= 1.0 and sampler.counts.unfillable == sum(f < 0.9999 for f in fills) > 0
    assert f"{sampler.counts.unfillable} below the fill band" in sampler.counts.describe()


def test_params_of_inverts_config_from_params():
    for i in range(0, MBV2.num_uniform(), 7):
        cfg = MBV2.uniform(i)
        assert MBV2.config_from_params(MBV2.params_of(cfg)) == cfg


def test_a_config_already_tried_or_queued_is_redrawn_within_the_band():
    """No config is trained twice: a proposal that repairs to a config the study has (a trial's
    params, or the enqueued baseline's fixed params before it starts) is changed into a new one,
    still within the budget band. Twenty trials in a space of 10^9 never meet a duplicate by
    chance, so the duplicate is made here."""
    import types

    budget = parse_budget("2M")
    sampler = BudgetSampler(optuna.samplers.RandomSampler(seed=0), MBV2, budget, SHAPE, 10, seed=0)
    fitting = sampler.repair(MBV2.params_of(MBV2.uniform(5)), seen=set())
    queued = types.SimpleNamespace(params={}, system_attrs={"fixed_params": fitting})
    seen = sampler.seen([queued])
    assert seen == {sampler.key(fitting)}
    for _ in range(30):  # a redraw that lands over the budget is shrunk back: some of 30 do
        again = sampler.repair(dict(fitting), seen=seen)
        cost = analytic_cost(MBV2.config_from_params(again), SHAPE, 10)
        assert sampler.key(again) not in seen and sampler.target <= fill_of(budget, cost.macs, cost.params) <= 1.0
    assert sampler.counts.duplicates >= 30 and sampler.counts.exhausted == 0
