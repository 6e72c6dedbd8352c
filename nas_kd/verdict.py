"""The one-sentence verdict of a finished search: did the searched student beat the hand-scaled one?

Both were retrained on the same seeds (`nas_kd.plan.Seeds.retrain`, which the search never used),
the baseline once in the search's own mode and, unless that mode is ``ce``, once with plain
cross-entropy. For each, the per-seed test accuracy differences (searched - baseline) give a mean
and a 95% t-interval (`nas_kd.stats`); the sentence says better, worse or no detectable
difference, by how much, at which MACs, and whether the search was cut short.
"""

from __future__ import annotations

from nas_kd.config import format_count
from nas_kd.stats import PairedDifference, paired_difference

__all__ = ["compare_runs", "verdict_sentence", "chose_baseline"]


def _by_seed(summary: dict) -> dict[int, float]:
    return {int(r["seed"]): float(r["test_accuracy"]) for r in summary["runs"]}


def compare_runs(winner: dict, baseline_modes: dict[str, dict]) -> dict[str, PairedDifference]:
    """Searched minus baseline, paired by seed, for every mode the baseline was trained in."""
    ours = _by_seed(winner)
    return {mode: paired_difference(ours, _by_seed(summary)) for mode, summary in baseline_modes.items()}


def _points(x: float) -> str:
    return f"{100 * x:+.2f}"


def _clause(mode: str, d: PairedDifference, baseline: str) -> str:
    if d.low is None:
        return f"{_points(d.mean)} points against {baseline} in mode {mode} (one seed: no interval, so no verdict)"
    interval = f"95% CI {_points(d.low)} to {_points(d.high)}"
    if d.direction == "no detectable difference":
        return f"not detectably different from {baseline} in mode {mode} ({_points(d.mean)} points, {interval})"
    return f"{d.direction} than {baseline} in mode {mode} by {abs(100 * d.mean):.2f} points ({interval})"


def chose_baseline(winner: dict, baselines: dict | None) -> bool:
    """Whether the winner is the uniform baseline itself (the re-screen found no searched student
    better: nas_kd.rescreen)."""
    return bool(baselines) and winner.get("config") is not None and winner.get("config") == baselines.get("config")


def verdict_sentence(winner: dict, baselines: dict | None, comparisons: dict[str, PairedDifference], cut_short: str | None = None) -> str:
    """``winner``/``baselines`` as in ``final.json``; ``cut_short`` says why the search stopped
    early (None when it ran to its requested trial count)."""
    prefix = f"Search cut short ({cut_short}): " if cut_short else ""
    who = f"the searched student ({format_count(winner['macs'])} MACs, mode {winner['mode']})"
    if not baselines or not comparisons:
        return f"{prefix}{who[0].upper()}{who[1:]} reached {100 * winner['test_mean']:.2f}% test accuracy; no baseline was trained, so there is no verdict."
    if chose_baseline(winner, baselines):
        # Its comparison in its own mode is with itself; the others (plain ce) still say what distillation bought.
        others = [(mode, d) for mode, d in comparisons.items() if mode != winner["mode"]]
        also = f" Over {others[0][1].n} paired seeds it is " + " and ".join(_clause(mode, d, "the same student") for mode, d in others) + "." if others else ""
        return f"{prefix}The search's answer is the uniform baseline itself ({format_count(baselines['macs'])} MACs, mode {winner['mode']}, {100 * winner['test_mean']:.2f}% test): no searched student beat it on the re-screen's full-schedule validation score.{also}"
    n = next(iter(comparisons.values())).n
    names = [f"the uniform baseline ({format_count(baselines['macs'])} MACs)"] + ["the same baseline"] * (len(comparisons) - 1)
    clauses = [_clause(mode, d, name) for (mode, d), name in zip(comparisons.items(), names, strict=True)]
    joined = " and ".join(clauses) if len(clauses) <= 2 else ", ".join(clauses[:-1]) + ", and " + clauses[-1]
    over = f"over {n} paired seeds" if n > 1 else "on one seed"
    return f"{prefix}{over[0].upper() if not prefix else over[0]}{over[1:]}, {who} is {joined}."
