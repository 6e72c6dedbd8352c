"""Search benchmark: does the searched student beat the hand-designed one at the same budget?

The GPU run (the default) uses the standard preset on Fashion-MNIST with the mbv2 space, budgets
0.5M and 2M MACs, 100 trials each: TPE, then random search with the same number of trained
trials; each winner is retrained on 5 seeds and tested, against the uniform baseline trained
with modes ce and kd on the same seeds (the TPE run trains the baselines; random search shares
them). It writes the "search" section of docs/BENCHMARKS.md and docs/results/search.json: per
budget and sampler the winner's and the baselines' per-seed test accuracies, MACs and paired
differences, and TPE minus random (their winners paired by retrain seed).

``--reduced`` is the CPU version: quick preset, mode kd, fewer trials and seeds (``--trials``,
``--seeds``); the section and the JSON say it is a CPU-reduced run.

    python -m bench.search_gpu                 # one GPU, ~hours
    python -m bench.search_gpu --reduced --trials 100 --seeds 5   # 2-core CPU, ~2 hours
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from bench._report import hardware, write_section
from nas_kd.config import QUANTITIES, Budget, format_count, get_preset
from nas_kd.errors import UserError
from nas_kd.meter import fill_of
from nas_kd.report import AXES
from nas_kd.search import SearchOptions, run_search
from nas_kd.stats import PairedDifference, paired_difference
from nas_kd.study import run_dir, write_json
from nas_kd.verdict import compare_runs

__all__ = ["fill", "main", "options", "paired_rows", "paired_table", "run_one", "table"]

RESULTS = Path(__file__).resolve().parent.parent / "docs" / "results" / "search.json"


def options(budget: str, sampler: str, *, study: str, space: str, dataset: str, mode: str, trials: int, preset: str, seed: int, retrain_seeds: int, baselines: bool, device: str = "auto", **more) -> SearchOptions:
    """The search one table row comes from (``more``: any other `SearchOptions` field, e.g.
    ``jobs``, ``teacher``, ``data_dir``)."""
    return SearchOptions(budget=budget, space=space, dataset=dataset, mode=mode, trials=trials, study=study, sampler=sampler, preset=preset, seed=seed, retrain_seeds=retrain_seeds, baselines=baselines, device=device, **more)


def run_one(opts: SearchOptions, log=print) -> dict:
    """One search + final retrain; the report.json content plus wall times."""
    start = time.perf_counter()
    try:
        result = run_search(opts, log=log)
        path = Path(result["report"]["report.json"])
    except UserError as e:  # e.g. random search found nothing within a tight budget
        log(f"bench: {e}")
        path = run_dir(opts.study) / "report.json"
    report = json.loads(path.read_text())
    report["bench_seconds"] = time.perf_counter() - start
    return report


def _acc(summary: dict | None) -> str:
    if not summary:
        return "-"
    if summary.get("test_std") is None:  # one seed: no spread to show
        return f"{100 * summary['test_mean']:.2f}"
    return f"{100 * summary['test_mean']:.2f} ± {100 * summary['test_std']:.2f}"


def fill(report: dict) -> dict:
    """How the trained trials (pruned ones included) used the budget: per trial its binding fill
    (`fill_of`, each quantity read from the trial's row as the report's Pareto axes read it),
    their median and minimum, how many were over budget and how many distinct configs."""
    budget = Budget(**{q: (report.get("budget") or {}).get(q) for q in QUANTITIES})  # no budget: records made before these columns
    trained = [t for t in report.get("trials") or [] if t["state"] in ("COMPLETE", "PRUNED")]
    limited = budget.limits()
    fills = [fill_of(budget, **{"macs": None, "params": None, **{q: AXES[q][1](t) for q in limited}}) for t in trained] if limited else []
    return {
        "trained": len(trained),
        "distinct": len({t["config"] for t in trained}),
        "median_fill": statistics.median(fills) if fills else None,
        "min_fill": min(fills) if fills else None,
        "over_budget": sum(f > 1 for f in fills),
    }


def table(results: list[tuple[str, str, dict]]) -> str:
    head = "| budget | sampler | trained / rejected trials | distinct | median / min fill | over budget | best val (brief) | winner MACs | winner params | winner test % | uniform ce test % | uniform kd test % | uniform MACs | wall s |\n"
    head += "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
    baselines = {b: r["baselines"] for b, s, r in results if r.get("baselines")}
    rows = []
    for budget, sampler, r in results:
        w, states = r["winner"], r["trials_by_state"]
        base = baselines.get(budget) or {}
        trained = sum(n for s, n in states.items() if s != "INFEASIBLE")
        f = fill(r)
        used = f"{f['distinct']} | {f['median_fill']:.3f} / {f['min_fill']:.3f} | {f['over_budget']}" if f["median_fill"] is not None else "- | - | -"
        if w is None:
            rows.append(f"| {budget} | {sampler} | {trained} / {states.get('INFEASIBLE', 0)} | {used} | no candidate within budget | - | - | - | - | - | - | {r['bench_seconds']:.0f} |")
            continue
        rows.append(
            f"| {budget} | {sampler} | {trained} / {states.get('INFEASIBLE', 0)} | {used} | {100 * w['search_val_accuracy']:.2f} | "
            f"{format_count(w['macs'])} | {format_count(w['params'])} | {_acc(w) if 'test_mean' in w else '-'} | {_acc(base.get('modes', {}).get('ce'))} | "
            f"{_acc(base.get('modes', {}).get('kd'))} | {format_count(base['macs']) if base else '-'} | {r['bench_seconds']:.0f} |"
        )
    return head + "\n".join(rows) + "\n"


def _seeds(summary: dict) -> dict[int, float]:
    return {int(r["seed"]): float(r["test_accuracy"]) for r in summary.get("retrain_runs") or summary.get("runs") or []}


def paired_rows(results: list[tuple[str, str, dict]]) -> dict:
    """Per search, the winner against its budget's uniform baseline in every mode (random search
    pairs with the TPE run's baselines: same seeds, same schedule), and per budget the first
    sampler's winner minus each other sampler's, paired by retrain seed. Searches without a
    retrained winner are left out."""
    baselines = {b: r["baselines"] for b, s, r in results if r.get("baselines")}
    searches, versus = [], []
    winners: dict[str, list[tuple[str, dict]]] = {}
    for budget, sampler, r in results:
        w, base = r.get("winner"), baselines.get(budget)
        if not w or "retrain_runs" not in w:
            continue
        winners.setdefault(budget, []).append((sampler, w))
        comparisons = compare_runs({"runs": w["retrain_runs"]}, base["modes"]) if base else {}
        searches.append({
            "budget": budget, "sampler": sampler,
            "trained_trials": (r.get("trial_counts") or {}).get("trained"), "trials_by_state": r.get("trials_by_state"),
            "wall_seconds": r.get("bench_seconds"), "fill": fill(r),
            "winner": {"describe": w["describe"], "macs": w["macs"], "params": w["params"], "search_val_accuracy": w["search_val_accuracy"], "mode": w.get("mode"), "test_by_seed": _seeds(w)},
            "baseline": None if not base else {"describe": base["describe"], "macs": base["macs"], "params": base["params"], "test_by_seed": {m: _seeds(summary) for m, summary in base["modes"].items()}},
            "winner_minus_baseline": {m: d.to_dict() for m, d in comparisons.items()},
        })  # fmt: skip
    for budget, entries in winners.items():
        (first, fw), *others = entries
        for sampler, w in others:
            d = paired_difference(_seeds(fw), _seeds(w))
            versus.append({"budget": budget, "a": first, "b": sampler, "a_macs": fw["macs"], "b_macs": w["macs"], "a_minus_b": d.to_dict()})
    return {"searches": searches, "samplers": versus}


def _diff(d: dict) -> str:
    p = PairedDifference.from_dict(d)
    if p.low is None:
        return f"{100 * p.mean:+.2f} (one seed)"
    return f"{100 * p.mean:+.2f} [{100 * p.low:+.2f}, {100 * p.high:+.2f}] ({p.direction})"


def paired_table(paired: dict) -> str:
    """Markdown: searched minus uniform baseline per search and mode, then sampler against sampler."""
    lines = ["| budget | sampler | winner MACs | baseline MACs | seeds | winner - baseline (kd), points [95% CI] | winner - baseline (ce) |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for s in paired["searches"]:
        d = s["winner_minus_baseline"]
        seeds = len(s["winner"]["test_by_seed"])
        base_macs = format_count(s["baseline"]["macs"]) if s["baseline"] else "-"
        winner = format_count(s["winner"]["macs"]) + (" (the baseline itself)" if s["baseline"] and s["winner"]["describe"] == s["baseline"]["describe"] else "")
        lines.append(f"| {s['budget']} | {s['sampler']} | {winner} | {base_macs} | {seeds} | {_diff(d['kd']) if 'kd' in d else '-'} | {_diff(d['ce']) if 'ce' in d else '-'} |")
    if paired["samplers"]:
        lines += ["", "| budget | samplers | MACs | difference, points [95% CI] |", "| --- | --- | --- | --- |"]
        lines += [f"| {v['budget']} | {v['a']} - {v['b']} | {format_count(v['a_macs'])} vs {format_count(v['b_macs'])} | {_diff(v['a_minus_b'])} |" for v in paired["samplers"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reduced", action="store_true", help="CPU version: quick preset, mode kd, 3 trials and 1 seed unless --trials / --seeds")
    p.add_argument("--budgets", default="0.5M,2M")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--space", default="search_spaces/mbv2.yaml")
    p.add_argument("--mode", default=None, help="distiller mode (default: the preset's, kd for both)")
    p.add_argument("--trials", type=int, default=None)
    p.add_argument("--seeds", type=int, default=None)
    p.add_argument("--preset", default=None)
    p.add_argument("--samplers", default="tpe,random")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--render", action="store_true", help="redraw the section and the JSON from the last run's studies (runs/bench*) and docs/results/search.json; train nothing")
    args = p.parse_args(argv)
    args.trials = args.trials or (3 if args.reduced else 100)
    args.seeds = args.seeds or (1 if args.reduced else 5)
    args.preset = args.preset or ("quick" if args.reduced else "standard")
    args.mode = args.mode or get_preset(args.preset).mode
    if args.render:
        return render(args)
    results = []
    started = time.perf_counter()
    for budget in args.budgets.split(","):
        for i, sampler in enumerate(args.samplers.split(",")):
            opts = options(budget, sampler, study=study_name(args, budget, sampler), space=args.space, dataset=args.dataset, mode=args.mode, trials=args.trials, preset=args.preset, seed=args.seed, retrain_seeds=args.seeds, baselines=i == 0, device=args.device)
            results.append((budget, sampler, run_one(opts, log=lambda text: print(text, flush=True))))
    command = "python -m bench.search_gpu " + " ".join(argv if argv is not None else sys.argv[1:])
    write(results, args, command.strip(), (time.perf_counter() - started) / 60, time.strftime("%Y-%m-%d"))
    return 0


def study_name(args, budget: str, sampler: str) -> str:
    return f"bench{'-reduced' if args.reduced else ''}_{args.dataset}_{budget}_{sampler}"


def render(args) -> int:
    """Rewrite the section and the JSON from the studies' report.json files and the recorded run
    (its command, date and wall times): new columns without rerunning hours of searches."""
    recorded = json.loads(RESULTS.read_text())
    args.reduced, args.preset, args.mode, args.trials, args.seeds = recorded["cpu_reduced"], recorded["preset"], recorded["mode"], recorded["trials"], recorded["retrain_seeds"]
    seconds = {(s["budget"], s["sampler"]): s["wall_seconds"] for s in recorded["searches"]}
    results = []
    for budget in args.budgets.split(","):
        for sampler in args.samplers.split(","):
            path = run_dir(study_name(args, budget, sampler)) / "report.json"
            if not path.is_file():
                raise UserError(f"no report at {path}: --render redraws a finished run; run the benchmark first")
            report = json.loads(path.read_text())
            report["bench_seconds"] = seconds[budget, sampler]
            results.append((budget, sampler, report))
    write(results, args, recorded["command"], sum(seconds.values()) / 60, recorded["date"])
    return 0


def write(results: list[tuple[str, str, dict]], args, command: str, total_minutes: float, date: str) -> None:
    if args.reduced:
        intro = (
            f"**CPU-reduced run** (`{command}`): preset {args.preset}, {args.trials} trained trials per search, "
            f"{args.seeds} retrain seed(s), mode {args.mode}, {args.dataset}, space {args.space}; the searches took "
            f"{total_minutes:.0f} minutes on this box. "
            "**The GPU figures (standard preset, 100 trials, 5 seeds) are owed**: run `make bench-gpu` on one GPU."
        )
    else:
        intro = f"`{command}`: preset {args.preset}, {args.trials} trained trials per search, {args.seeds} retrain seeds, mode {args.mode}, {args.dataset}, space {args.space}."
    body = (
        f"## Search: searched student vs uniform baseline\n\n{intro}\n\nHardware: {hardware()}. Test accuracy is mean ± std over the retrain seeds "
        "(full schedule); the uniform baseline is the space's largest uniform member within the budget, trained with the same "
        "schedule and seeds. Random search shares the TPE run's baselines. *Fill*: a trained trial's MACs over the budget "
        "(pruned trials included); *distinct*: distinct configs among the trained trials.\n\n" + table(results)
    )
    paired = paired_rows(results)
    body += "\nPaired by retrain seed (per-seed rows: `docs/results/search.json`):\n\n" + paired_table(paired)
    body += f"\n_Measured {date}._\n"
    write_json(RESULTS, {"command": command, "hardware": hardware(), "date": date, "cpu_reduced": args.reduced, "preset": args.preset, "mode": args.mode, "trials": args.trials, "retrain_seeds": args.seeds, **paired})
    write_section("search", body)
    print(body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
