"""Search benchmark: does the searched student beat the hand-designed one at the same budget?

The GPU run (the default) uses the standard preset on Fashion-MNIST with the mbv2 space, budgets
0.5M and 3M MACs, 100 trials each: TPE, then random search with the same number of trained
trials; each winner is retrained with 3 seeds and tested, against the uniform baseline trained
with modes ce and kd (the TPE run trains the baselines; random search shares them). It writes
the "search" section of docs/BENCHMARKS.md.

``--reduced`` is the CPU version: quick preset, 3 trials, one retrain seed, mode kd. Its figures only
show that the pipeline runs end to end; it says so in the section it writes.

    python -m bench.search_gpu                 # one GPU, ~hours
    OMP_NUM_THREADS=1 python -m bench.search_gpu --reduced   # 2-core CPU, ~10 minutes
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from bench._report import hardware, write_section
from nas_kd.config import format_count
from nas_kd.errors import UserError
from nas_kd.search import SearchOptions, run_search
from nas_kd.study import run_dir

__all__ = ["main", "options", "run_one", "table"]


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


def table(results: list[tuple[str, str, dict]]) -> str:
    head = "| budget | sampler | trained / rejected trials | best val (brief) | winner MACs | winner params | winner test % | uniform ce test % | uniform kd test % | uniform MACs | wall s |\n"
    head += "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
    baselines = {b: r["baselines"] for b, s, r in results if r.get("baselines")}
    rows = []
    for budget, sampler, r in results:
        w, states = r["winner"], r["trials_by_state"]
        base = baselines.get(budget) or {}
        trained = sum(n for s, n in states.items() if s != "INFEASIBLE")
        if w is None:
            rows.append(f"| {budget} | {sampler} | {trained} / {states.get('INFEASIBLE', 0)} | no candidate within budget | - | - | - | - | - | - | {r['bench_seconds']:.0f} |")
            continue
        rows.append(
            f"| {budget} | {sampler} | {trained} / {states.get('INFEASIBLE', 0)} | {100 * w['search_val_accuracy']:.2f} | "
            f"{format_count(w['macs'])} | {format_count(w['params'])} | {_acc(w) if 'test_mean' in w else '-'} | {_acc(base.get('modes', {}).get('ce'))} | "
            f"{_acc(base.get('modes', {}).get('kd'))} | {format_count(base['macs']) if base else '-'} | {r['bench_seconds']:.0f} |"
        )
    return head + "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reduced", action="store_true", help="CPU version: quick preset, 3 trials, 1 seed, mode kd")
    p.add_argument("--budgets", default="0.5M,3M")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--space", default="search_spaces/mbv2.yaml")
    p.add_argument("--mode", default=None, help="distiller mode (default full; kd with --reduced, cheaper on a CPU)")
    p.add_argument("--trials", type=int, default=None)
    p.add_argument("--seeds", type=int, default=None)
    p.add_argument("--preset", default=None)
    p.add_argument("--samplers", default="tpe,random")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    args.trials = args.trials or (3 if args.reduced else 100)
    args.seeds = args.seeds or (1 if args.reduced else 3)
    args.preset = args.preset or ("quick" if args.reduced else "standard")
    args.mode = args.mode or ("kd" if args.reduced else "full")
    results = []
    for budget in args.budgets.split(","):
        for i, sampler in enumerate(args.samplers.split(",")):
            study = f"bench{'-reduced' if args.reduced else ''}_{args.dataset}_{budget}_{sampler}"
            opts = options(budget, sampler, study=study, space=args.space, dataset=args.dataset, mode=args.mode, trials=args.trials, preset=args.preset, seed=args.seed, retrain_seeds=args.seeds, baselines=i == 0, device=args.device)
            results.append((budget, sampler, run_one(opts, log=lambda text: print(text, flush=True))))
    command = "python -m bench.search_gpu" + (" --reduced" if args.reduced else "")
    if args.reduced:
        intro = (
            f"**CPU-reduced run** (`{command}`): preset {args.preset}, {args.trials} trained trials per search, "
            f"{args.seeds} retrain seed(s), mode {args.mode}, {args.dataset}, space {args.space}. It shows the pipeline "
            "end to end; with this few trials and epochs the numbers say little about search quality. "
            "**The GPU figures (standard preset, 100 trials, 3 seeds) are owed**: run `python -m bench.search_gpu` on one GPU."
        )
    else:
        intro = f"`{command}`: preset {args.preset}, {args.trials} trained trials per search, {args.seeds} retrain seeds, mode {args.mode}, {args.dataset}, space {args.space}."
    body = (
        f"## Search: searched student vs uniform baseline\n\n{intro}\n\nHardware: {hardware()}. Test accuracy is mean ± std over the retrain seeds "
        "(full schedule); the uniform baseline is the space's largest uniform member within the budget, trained with the same "
        "schedule and seeds. Random search shares the TPE run's baselines.\n\n" + table(results)
    )
    write_section("search", body)
    print(body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
