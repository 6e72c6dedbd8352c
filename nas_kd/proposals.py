"""`BudgetSampler`: every candidate within the budget, near it, and never one already tried.

Any Optuna sampler (TPE, NSGA-II, random) is wrapped. Its proposal for a whole student (relative
parameters where it has them, independent draws for the rest) is *repaired* in-process before it
becomes the trial's parameters, in the index space of each decision's sorted choices (larger index
= more cost, see `nas_kd.space`):

1. **shrink** while over budget: a random decision that can go down goes down one choice;
2. **grow** while under ``min_fill`` of the binding limit: a random decision whose next choice
   still fits goes up one choice, until none can;
3. **unique**: if the study already holds that config (any state, any worker), a random decision
   is moved to a random other choice and the config repaired again, up to `MAX_REDRAWS` times.

The analytic cost (`nas_kd.cost.analytic_cost`, exactly fvcore's count, ~0.05 ms; peak memory and
weight bytes from `nas_kd.memory`, exact too) and, for a latency limit, the machine's latency
table's prediction (`nas_kd.latency`) decide, through `nas_kd.meter.BudgetMeter`, so a repair
costs milliseconds and an over-budget draw never becomes an Optuna trial. Because the repaired
config *is* the trial's parameter set, TPE and NSGA-II learn from what was actually trained. The
fill of a config is its cost over its limit, the largest over every limit of the budget (the
binding limit).

Two workers must not repair to the same config at once: `nas_kd.workers` asks for a trial and
writes its parameters under the study lock, and the sampler reads the study's configs inside it.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass

from optuna.distributions import CategoricalDistribution
from optuna.samplers import BaseSampler

from nas_kd.config import Budget
from nas_kd.meter import BudgetMeter, fill_of

__all__ = ["BudgetSampler", "ProposalCounts", "fill_of", "MAX_REDRAWS", "DEFAULT_MIN_FILL"]

MAX_REDRAWS = 200
DEFAULT_MIN_FILL = 0.85


@dataclass
class ProposalCounts:
    """What the repairs did in this process (for the one progress line the search prints)."""

    proposals: int = 0
    over_budget: int = 0  # proposals that had to shrink
    under_filled: int = 0  # proposals that had to grow
    duplicates: int = 0  # repaired configs already in the study, redrawn
    unfillable: int = 0  # proposals no growth could bring to min_fill (kept, below the band)
    exhausted: int = 0  # no new config found in MAX_REDRAWS redraws
    evaluations: int = 0  # cost evaluations (what a repair's time is made of)
    seconds: float = 0.0

    def describe(self) -> str:
        each = 1e3 * self.seconds / max(self.proposals, 1)
        text = f"{self.proposals} proposals: {self.over_budget} over budget shrunk, {self.under_filled} under-filled grown, {self.duplicates} duplicates redrawn"
        if self.unfillable:
            text += f", {self.unfillable} below the fill band (nothing larger fits)"
        return text + f" ({each:.2f} ms each, none trained or stored)"


class BudgetSampler(BaseSampler):
    def __init__(self, base: BaseSampler, space, budget: Budget, input_shape: tuple[int, int, int], num_classes: int, *, min_fill: float = DEFAULT_MIN_FILL, seed: int = 0, table=None):
        self.base, self.space, self.budget = base, space, budget
        self.shape, self.num_classes, self.min_fill = tuple(input_shape), num_classes, min_fill
        self.choices = {name: tuple(c) for name, c in space.decisions() if len(c) > 1}
        self.distributions = {name: CategoricalDistribution(list(c)) for name, c in self.choices.items()}
        self.rng = random.Random(seed)
        self.counts = ProposalCounts()
        self.meter = BudgetMeter(budget, input_shape, num_classes, space, table=table)  # table: the machine's latency table unless given
        # A budget above the space's largest member cannot be filled: the band is then relative
        # to that member's cost.
        largest = {n: len(c) - 1 for n, c in self.choices.items()}
        self.target = min_fill * min(1.0, self.fill(largest))

    # -------------------------------------------------------------------- repair

    def fill(self, index: dict[str, int]) -> float:
        self.counts.evaluations += 1
        return self.meter.fill(self.space.config_at(index))

    def params(self, index: dict[str, int]) -> dict:
        return {name: self.choices[name][i] for name, i in index.items()}

    def _shrink(self, index: dict[str, int], fill: float) -> float:
        while fill > 1.0:
            movable = [n for n, i in index.items() if i > 0]
            if not movable:
                break  # the smallest member is over budget: build_plan refuses that budget first
            # Far over budget (a uniform draw at 0.5M is ~10x over), step several decisions at once:
            # one cost evaluation per step is what a repair costs; growing refills any overshoot.
            for name in self.rng.sample(movable, min(len(movable), 1 + int(2 * math.log2(fill)))):
                index[name] -= 1
            fill = self.fill(index)
        return fill

    def _grow(self, index: dict[str, int], fill: float) -> float:
        while fill < self.target:
            options = [n for n, i in index.items() if i + 1 < len(self.choices[n])]
            self.rng.shuffle(options)
            for name in options:
                index[name] += 1
                grown = self.fill(index)
                if grown <= 1.0:
                    fill = grown
                    break
                index[name] -= 1
            else:
                return fill  # nothing larger fits
        return fill

    def repair(self, params: dict, seen: set[tuple]) -> dict:
        """Proposal -> a config whose fill is within [target, 1] (``target`` = min_fill, or
        min_fill x the largest member's fill when the budget exceeds it), or as close as the
        space allows, and not in ``seen``."""
        start = time.perf_counter()
        self.counts.proposals += 1
        index = {n: self.choices[n].index(params[n]) for n in self.choices}
        fill = self.fill(index)
        if fill > 1.0:
            self.counts.over_budget += 1
            fill = self._shrink(index, fill)
        if fill < self.target:
            self.counts.under_filled += 1
            fill = self._grow(index, fill)
        for attempt in range(MAX_REDRAWS):
            if self.key(self.params(index)) not in seen:
                break
            self.counts.duplicates += 1
            name = self.rng.choice(list(index))
            index[name] = self.rng.choice([i for i in range(len(self.choices[name])) if i != index[name]])
            fill = self._shrink(index, self.fill(index))
            if attempt < MAX_REDRAWS // 2:  # then give up the band before giving up a new config
                fill = self._grow(index, fill)
        else:
            self.counts.exhausted += 1
        if fill < self.target:
            self.counts.unfillable += 1
        self.counts.seconds += time.perf_counter() - start
        return self.params(index)

    def key(self, params: dict) -> tuple:
        return tuple(params.get(n) for n in self.choices)

    def seen(self, trials) -> set[tuple]:
        """Every config among a study's ``trials`` or queued (any state, any worker)."""
        keys = set()
        for t in trials:
            params = t.params or t.system_attrs.get("fixed_params") or {}
            if params:
                keys.add(self.key(params))
        return keys

    # -------------------------------------------------------------------- Optuna's sampler API

    def infer_relative_search_space(self, study, trial):
        return dict(self.distributions)

    def sample_relative(self, study, trial, search_space):
        if not search_space:
            return {}
        inner = self.base.infer_relative_search_space(study, trial)
        params = dict(self.base.sample_relative(study, trial, inner)) if inner else {}
        for name, dist in self.distributions.items():
            if name not in params:
                params[name] = self.base.sample_independent(study, trial, name, dist)
        trials = study.get_trials(deepcopy=False)
        self.meter.correct_from(trials)  # latency budgets: predictions corrected by the study's measurements
        return self.repair(params, self.seen(trials))

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self.base.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study, trial) -> None:
        self.base.before_trial(study, trial)

    def after_trial(self, study, trial, state, values) -> None:
        self.base.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.base.reseed_rng()
        self.rng = random.Random()
