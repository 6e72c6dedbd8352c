"""Does the search's pruner stop the right candidates? Its signal, measured without pruning.

The search prunes a candidate after any brief epoch but the last when its best validation
accuracy so far is under the median of the finished candidates' at that epoch
(`nas_kd.search.TrainedMedianPruner`, Optuna's MedianPruner; the quick preset's 2 epochs: after
the first only). That saves compute only if the early epochs rank candidates the way the last one
does. This bench
trains N random in-budget candidates on the preset's brief schedule with pruning off, keeps every
epoch's validation accuracy, and replays pruning rules on that record in trial order:

- the Spearman correlation of epoch-1 with final validation accuracy;
- per rule (no pruning, median, lower quartile, ...): the share of the brief compute it spends,
  how many of the final top-k it stops, and its regret (best final accuracy overall minus the best
  among the candidates it lets finish).

Random sampling makes the replay exact: which candidate comes next does not depend on what was
pruned (with TPE it would). The test set is never read.

    python -m bench.prune_signal --budget 2M --trials 80          # 2-core CPU, quick preset, ~15 min idle
    python -m bench.prune_signal --budget 2M --trials 40 --preset standard   # ~50 min (section prune-signal-standard)
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from bench._report import hardware, write_section
from nas_kd.stats import percentile, spearman

__all__ = ["Rule", "RULES", "replay", "main"]

EQUAL_COMPUTE_TRIALS = 20  # the compute of this many unpruned brief runs, for the equal-compute column
RESULTS = Path(__file__).resolve().parent.parent / "docs" / "results" / "prune_signal.json"  # the quick preset's


def results_path(preset: str, seed: int = 0) -> Path:
    """Each preset's record, and each other search seed's, in a file of its own (the quick
    preset's seed 0 was the first and only one)."""
    tail = f"_s{seed}" if seed else ""
    return RESULTS if (preset, seed) == ("quick", 0) else RESULTS.with_name(f"prune_signal_{preset}{tail}.json")


def section_name(preset: str, seed: int = 0) -> str:
    return "prune-signal" if (preset, seed) == ("quick", 0) else f"prune-signal-{preset}" + (f"-s{seed}" if seed else "")


@dataclass(frozen=True)
class Rule:
    """Stop a candidate when its accuracy is under this percentile of the earlier finished
    candidates' at the same epoch, once `startup` have finished (None: never)."""

    name: str
    percentile: float | None
    startup: int = 5
    from_epoch: int = 1  # the first epoch after which it may stop one (Optuna's n_warmup_steps)


RULES = (
    Rule("none", None),
    Rule("median", 50.0),  # the standard preset's until 2026-12-07
    Rule("lower quartile", 25.0),
    Rule("lowest tenth", 10.0),
    # Added 2026-12-07 after the standard preset's first record (epoch 1 ranked candidates at
    # Spearman 0.15, epoch 2 at 0.49); it stops nothing on a 2-epoch brief run.
    Rule("median from epoch 2", 50.0, from_epoch=2),
)


def presets_rule(rule: Rule, preset: str) -> bool:
    """Whether `rule` is what a search on `preset` prunes with today (nas_kd.search._pruner)."""
    from nas_kd.config import PRESETS

    p = PRESETS[preset]
    if not p.prune:
        return rule.percentile is None
    return rule.percentile == 50.0 and rule.startup == 5 and rule.from_epoch == p.prune_from_epoch


def stopped_at(rule: Rule, finished: list[list[float]], history: list[float]) -> int:
    """The epoch (from 1) after which `rule` stops a candidate with this validation ``history``;
    0 if it runs to the end. As the search's pruner (`nas_kd.search.TrainedMedianPruner`, Optuna's
    MedianPruner) decides: after every epoch but the last, the candidate's best accuracy so far
    against the percentile of the ``finished`` candidates' accuracies at that epoch (Optuna reads
    COMPLETE trials only: a stopped candidate's values never enter the reference), once
    `startup` candidates have finished."""
    if rule.percentile is None or len(finished) < rule.startup:
        return 0
    for epoch in range(rule.from_epoch, len(history)):
        if max(history[:epoch]) < percentile([h[epoch - 1] for h in finished], rule.percentile / 100):
            return epoch
    return 0


def _walk(rule: Rule, order: list[list[float]]):
    """(history, `stopped_at` epoch) for each candidate in ``order``, as a search meets them: the
    ones that finish become the reference of the next."""
    finished: list[list[float]] = []
    for h in order:
        stop = stopped_at(rule, finished, h)
        if not stop:
            finished.append(h)
        yield h, stop


def replay(histories: list[list[float]], rule: Rule, top_k: int = 5) -> dict:
    """Apply `rule` to per-candidate validation histories in trial order."""
    final = [h[-1] for h in histories]
    epochs = len(histories[0])
    stops = [stop for _, stop in _walk(rule, histories)]
    kept = [f for f, s in zip(final, stops, strict=True) if not s]
    top = sorted(range(len(final)), key=lambda i: -final[i])[:top_k]
    epochs_spent = sum(s or epochs for s in stops)
    return {
        "rule": rule.name,
        "stopped": sum(1 for s in stops if s),
        "stopped_by_epoch": {str(e): stops.count(e) for e in range(1, epochs)},
        "compute_share": epochs_spent / (epochs * len(histories)),
        "top_k_stopped": sum(1 for i in top if stops[i]),
        "regret": max(final) - max(kept),
    }


def equal_compute(histories: list[list[float]], rule: Rule, trials: int, draws: int = 2000, seed: int = 0) -> float:
    """Expected best final accuracy among the candidates `rule` lets finish, when a search may
    spend the brief compute of `trials` unpruned candidates: the record in `draws` random orders,
    candidates taken in turn until that compute is spent (a stopped one costs the epochs it ran)."""
    import random

    rng = random.Random(seed)
    epochs = len(histories[0])
    best_total = 0.0
    for _ in range(draws):
        spent, best = 0, 0.0
        for h, stop in _walk(rule, rng.sample(histories, len(histories))):
            cost = stop or epochs
            if spent + cost > trials * epochs:
                break
            spent += cost
            if not stop:
                best = max(best, h[-1])
        best_total += best
    return best_total / draws


def collect(budget: str, trials: int, seed: int, preset: str, mode: str, log=print) -> list[dict]:
    """Train `trials` random in-budget candidates on the brief schedule, no pruning."""
    import optuna

    from nas_kd.device import resolve_device
    from nas_kd.models.teachers import resolve_teacher
    from nas_kd.plan import build_plan
    from nas_kd.search import Objective, SearchOptions, _budget_sampler

    plan = build_plan(SearchOptions(budget=budget, sampler="random", mode=mode, preset=preset, seed=seed, trials=trials, study=f"prune-signal_{budget}_s{seed}"))
    device = resolve_device("auto")
    teacher = None
    if plan.mode.uses_teacher:
        teacher, meta, path = resolve_teacher(plan.teacher.spec, plan.dataset, plan.preset.teacher, preset=plan.preset.name, seed=plan.seeds.split, device=device, data_dir=plan.data_dir, reconstruction=plan.teacher.reconstruction, log=log)
        plan = plan.with_teacher(meta, path)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=_budget_sampler(plan, seed), pruner=optuna.pruners.NopPruner())
    objective = Objective(plan, teacher=teacher, device=device, prune=False)
    rows = []
    while len(rows) < trials:
        start = time.perf_counter()
        study.optimize(objective, n_trials=1)
        t = study.trials[-1]
        if not t.user_attrs.get("feasible"):
            continue
        rows.append({"number": t.number, "describe": t.user_attrs["describe"], "macs": t.user_attrs["macs"], "val_history": t.user_attrs["val_history"], "seconds": time.perf_counter() - start})
        log(f"prune-signal: {len(rows)}/{trials} {rows[-1]['describe']} val {' '.join(f'{a:.4f}' for a in rows[-1]['val_history'])} ({rows[-1]['seconds']:.1f}s)")
    return rows


def analyse(rows: list[dict], top_k: int = 5) -> dict:
    histories = [r["val_history"] for r in rows]
    final = [h[-1] for h in histories]
    return {
        "candidates": len(rows),
        "epochs": len(histories[0]),
        # Every epoch the pruner reads (all but the last), against the final one.
        "spearman_by_epoch": [spearman([h[e] for h in histories], final) for e in range(len(histories[0]) - 1)],
        "median_by_epoch": [statistics.median(h[e] for h in histories) for e in range(len(histories[0]))],
        "top_k": top_k,
        "rules": [replay(histories, rule, top_k) | {"equal_compute_best": equal_compute(histories, rule, EQUAL_COMPUTE_TRIALS)} for rule in RULES],
        "equal_compute_trials": EQUAL_COMPUTE_TRIALS,
    }


def _signal(a: dict) -> str:
    """How well each epoch the pruner reads ranks the candidates like the end."""
    if a["epochs"] <= 2:
        return f"Spearman(epoch-1, final validation accuracy) = **{a['spearman_by_epoch'][0]:.2f}**; medians {a['median_by_epoch'][0]:.3f} after epoch 1, {a['median_by_epoch'][-1]:.3f} at the end."
    rho = ", ".join(f"epoch {e + 1} **{r:.2f}**" for e, r in enumerate(a["spearman_by_epoch"]))
    medians = ", ".join(f"{m:.3f}" for m in a["median_by_epoch"])
    return f"Spearman with the final validation accuracy: {rho}; medians by epoch {medians}."


def render(record: dict) -> str:
    a = record["analysis"]
    lines = [
        "## Does the pruner stop the right candidates? (CPU)" if record["preset"] == "quick" else f"## Does the pruner stop the right candidates? (CPU, {record['preset']} preset{', search seed ' + str(record['seed']) if record['seed'] else ''})",
        "",
        f"`{record['command']}` ({record['date']}, {record['hardware']}; preset {record['preset']}, mode {record['mode']}, budget {record['budget']}, random sampler, search seed {record['seed']}).",
        "",
        f"{a['candidates']} random in-budget candidates trained on the brief schedule ({a['epochs']} epochs) with pruning off; the rules are replayed on their record in trial order. "
        + _signal(a),
        "",
        f"| rule (stop after an epoch but the last if the best so far is under ... of the finished candidates' at that epoch) | stopped{' (after epoch ' + ', '.join(str(e) for e in range(1, a['epochs'])) + ')' if a['epochs'] > 2 else ''} | brief compute spent | of the final top {a['top_k']}, stopped | regret (best final - best kept) | best final at the compute of {a['equal_compute_trials']} unpruned runs |",
        "|---|---|---|---|---|---|",
    ]
    for r in a["rules"]:
        by_epoch = f" ({', '.join(str(n) for n in r['stopped_by_epoch'].values())})" if a["epochs"] > 2 else ""
        name = r["rule"] + (" (the preset's today)" if presets_rule(next(rule for rule in RULES if rule.name == r["rule"]), record["preset"]) else "")
        lines.append(f"| {name} | {r['stopped']}/{a['candidates']}{by_epoch} | {r['compute_share']:.0%} | {r['top_k_stopped']} | {100 * r['regret']:+.2f} pts | {100 * r['equal_compute_best']:.2f}% |")
    lines += ["", "*best final at equal compute*: the mean over 2,000 random orders of this record of the best final validation accuracy among the candidates a rule lets finish, taking candidates until the compute of that many unpruned brief runs is spent (a stopped one costs the epochs it ran): what a random search with that rule would find for the same time."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", default="2M")
    ap.add_argument("--trials", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--mode", default="kd")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--render", action="store_true", help="rewrite the section from the JSON; train nothing")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.render:
        import datetime as dt
        import shlex
        import sys

        rows = collect(args.budget, args.trials, args.seed, args.preset, args.mode)
        record = {"command": shlex.join(["python", "-m", "bench.prune_signal", *(sys.argv[1:] if argv is None else argv)]), "date": dt.date.today().isoformat(), "hardware": hardware(), "budget": args.budget, "seed": args.seed, "preset": args.preset, "mode": args.mode, "rows": rows}
        # Only the rows: the analysis derives from them and is recomputed at every render (a
        # stored one went stale when the replay was corrected, 2026-12-07).
        results_path(args.preset, args.seed).write_text(json.dumps(record, indent=1) + "\n")
    record = json.loads(results_path(args.preset, args.seed).read_text())
    record["analysis"] = analyse(record["rows"])
    write_section(section_name(record["preset"], record["seed"]), render(record))
    print(render(record))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
