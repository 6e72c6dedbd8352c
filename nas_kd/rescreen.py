"""Re-screen: a second, stronger fidelity for the search's best few candidates.

The search ranks candidates by one brief run each (a few epochs on a subset), which is noisy:
two students a point apart after the brief schedule are often in the other order after the full
one (docs/BENCHMARKS.md, "Is brief training predictive?"). So before the final retrain the
``--rescreen K`` best distinct candidates by brief validation accuracy are trained again with the
*full* schedule on the *search* seed, scored on the *validation* split, and the winner is the best
of those. The uniform baseline's trial is always among them, in the top K or not: the brief
schedule under-ranks deep, narrow students that learn slowly at first, and the uniform members
are such students (at 0.5M MACs on Fashion-MNIST its brief score was 64.0% against 78-80% for the
top three, yet its retrain beat the searched winner by a point: docs/BENCHMARKS.md, "search").
The search's answer is never worse at this fidelity than the hand-scaled one it started from. The test split stays unread until
the retrain; the retrain seeds stay disjoint from the seed the winner was chosen with.

Scores live in the study (user attribute ``nas_kd_rescreen``, keyed by trial number and by the
schedule, seed and mode they were measured with), so a resumed or shared study never trains a
re-screen twice and `nas-kd report` shows them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

from nas_kd.study import is_feasible

__all__ = ["most_runs", "RESCREEN_ATTR", "RescreenKey", "ranked", "scores", "record", "choose", "rescreen", "candidates_key", "contenders"]

RESCREEN_ATTR = "nas_kd_rescreen"


@dataclass(frozen=True)
class RescreenKey:
    """What a re-screen score was measured with: a score under another key does not count."""

    schedule: tuple[tuple[str, object], ...]
    seed: int
    mode: str

    @classmethod
    def of(cls, plan) -> RescreenKey:
        return cls(tuple(sorted(plan.full.to_dict().items())), plan.seeds.search, plan.mode.describe())

    def to_dict(self) -> dict:
        d = asdict(self)
        d["schedule"] = dict(self.schedule)
        return d


def ranked(study, exclude: frozenset[int] = frozenset()) -> list:
    """Feasible COMPLETE trials not in ``exclude`` (e.g. measured over a latency limit), best
    brief validation accuracy first (ties: fewer MACs, then the earlier trial), one per distinct
    config."""
    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if is_feasible(t) and t.user_attrs.get("feasible", True) and t.number not in exclude]
    out, seen = [], set()
    for t in sorted(done, key=lambda t: (-t.values[0], t.user_attrs.get("macs", 0), t.number)):
        if t.user_attrs.get("config") not in seen:
            seen.add(t.user_attrs.get("config"))
            out.append(t)
    return out


def scores(study, key: RescreenKey) -> dict[int, float]:
    """Re-screen validation accuracy per trial number, for scores measured under ``key``."""
    stored = study.user_attrs.get(RESCREEN_ATTR) or {}
    return {int(n): e["val_accuracy"] for n, e in stored.items() if e.get("key") == key.to_dict()}


def record(study, trial_number: int, key: RescreenKey, val_accuracy: float, seconds: float) -> None:
    stored = dict(study.user_attrs.get(RESCREEN_ATTR) or {})
    stored[str(trial_number)] = {"key": key.to_dict(), "val_accuracy": float(val_accuracy), "seconds": float(seconds)}
    study.set_user_attr(RESCREEN_ATTR, stored)


def most_runs(count: int) -> int:
    """Full-schedule runs a re-screen of the ``count`` best trains at most: those and the uniform
    baseline (`contenders`), none with ``count`` < 2."""
    return count + 1 if count >= 2 else 0


def contenders(study, count: int, exclude: frozenset[int] = frozenset()) -> list:
    """The re-screen's candidates: the brief ranking's ``count`` best, and the uniform baseline's
    trial after them if it is not among them (module docstring); none with ``count`` < 2."""
    if count < 2:
        return []
    order = ranked(study, exclude)
    top = order[:count]
    baseline = next((t for t in order[count:] if t.user_attrs.get("baseline")), None)
    return top + ([baseline] if baseline is not None else [])


def choose(study, count: int, key: RescreenKey, exclude: frozenset[int] = frozenset()):
    """(winner trial or None, re-screen rows or None). With ``count`` < 2 or fewer than two
    candidates, or while a candidate lacks its score, the brief ranking decides."""
    order = ranked(study, exclude)
    if not order:
        return None, None
    top = contenders(study, count, exclude)
    have = scores(study, key)
    if count < 2 or len(top) < 2 or any(t.number not in have for t in top):
        return order[0], None
    winner = max(top, key=lambda t: (have[t.number], -t.user_attrs.get("macs", 0), -t.number))
    rows = [{"trial": t.number, "brief_val_accuracy": t.values[0], "rescreen_val_accuracy": have[t.number], "macs": t.user_attrs.get("macs"), "baseline": bool(t.user_attrs.get("baseline"))} for t in top]
    return winner, rows


def candidates_key(study, count: int, exclude: frozenset[int] = frozenset()) -> str:
    """What a finalisation is for, known before any re-screen: the brief run's top candidates
    (its winner alone without a re-screen). More trials that change them call for a new one."""
    top = [t.number for t in (contenders(study, count, exclude) if count >= 2 else ranked(study, exclude)[:1])]
    return f"trial {top[0]}" if len(top) == 1 else "trials " + ",".join(map(str, top))


TrainAll = Callable[[list[str], Callable[[int, tuple[float, float]], None]], None]


def rescreen(
    study, plan, train_val: Callable[[str], tuple[float, float]], log: Callable[[str], None] = print, exclude: frozenset[int] = frozenset(), *, train_all: TrainAll | None = None
) -> int:
    """Score the `contenders` (the ``plan.rescreen`` best and the baseline) that lack a score under this plan's key;
    ``train_val(config_json)`` trains one with the full schedule on the search seed and returns
    (validation accuracy, seconds), or None if it did not train it (a deadline passed: it stays
    unscored). ``train_all(configs, done)``, where given, trains several at once instead
    (`nas_kd.finalize`: worker processes) and calls ``done(index, (val, seconds) or None)`` as each
    finishes, so every finished score is recorded at once (an interrupted re-screen keeps them).
    Returns how many were trained."""
    if plan.rescreen < 2:
        return 0
    key = RescreenKey.of(plan)
    top = contenders(study, plan.rescreen, exclude)
    todo = [t for t in top if t.number not in scores(study, key)]
    finished = 0

    def done(i: int, result: tuple[float, float] | None) -> None:
        nonlocal finished
        if result is None:  # not started (`nas_kd.finalize`'s start_by): still unscored
            return
        val, seconds = result
        t = todo[i]
        record(study, t.number, key, val, seconds)
        finished += 1
        log(f"rescreen {finished}/{len(todo)}: trial {t.number} brief val {t.values[0]:.4f} -> full-schedule val {val:.4f} ({seconds:.1f}s)")

    configs = [t.user_attrs["config"] for t in todo]
    if train_all is not None and len(todo) > 1:
        train_all(configs, done)
    else:
        for i, config in enumerate(configs):
            done(i, train_val(config))
    return finished
