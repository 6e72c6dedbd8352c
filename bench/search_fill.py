"""Do proposals use the budget? Searches whose candidates are repaired into [min-fill, 1] of it.

For each budget and sampler: a search on real Fashion-MNIST (mode ce, so no teacher is needed;
the proposal machinery does not depend on the mode), ``--trials N`` trained candidates, no final
retrain. Recorded: trained candidates, over-budget trials in the study (must be 0), each trained
candidate's fill (MACs / budget), what the repairs did and how long they took, and, for context,
how many uniformly random mbv2 members fit the budget at all. Writes the ``search-fill`` section of
docs/BENCHMARKS.md and docs/results/search_fill.json.

    OMP_NUM_THREADS=1 python -m bench.search_fill --trials 6     # 2-core CPU, ~10 minutes
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import time
from pathlib import Path

from bench._report import hardware, write_section
from nas_kd.config import format_count, parse_budget
from nas_kd.cost import analytic_cost
from nas_kd.proposals import fill_of
from nas_kd.search import SearchOptions, run_search
from nas_kd.space import SearchSpace
from nas_kd.study import load_study, run_dir

RESULTS = Path(__file__).resolve().parent.parent / "docs" / "results" / "search_fill.json"


def raw_fit_rate(space: SearchSpace, budget_text: str, draws: int, shape=(1, 28, 28)) -> float:
    rng, budget = random.Random(0), parse_budget(budget_text)
    fits = 0
    for _ in range(draws):
        cost = analytic_cost(space.random_config(rng), shape, 10)
        fits += fill_of(budget, cost.macs, cost.params) <= 1.0
    return fits / draws


def run_one(budget: str, sampler: str, args) -> dict:
    study = f"bench-fill_{budget}_{sampler}"
    # From an empty study: a resumed one proposes nothing, and its row would count no repairs.
    shutil.rmtree(run_dir(study), ignore_errors=True)
    opts = SearchOptions(budget=budget, space=args.space, dataset="fashion-mnist", mode="ce", trials=args.trials, study=study, sampler=sampler, preset="quick", seed=args.seed, baselines=False, device="cpu")
    start = time.perf_counter()
    result = run_search(opts, log=lambda text: print(text, flush=True), finish=False)
    trials = load_study(study).get_trials(deepcopy=False)
    limit = parse_budget(budget)
    trained = [t for t in trials if t.user_attrs.get("feasible") and t.state.name in ("COMPLETE", "PRUNED")]
    fills = [fill_of(limit, t.user_attrs["macs"], t.user_attrs["params"]) for t in trained]
    p = result["proposals"]
    return {
        "budget": budget,
        "sampler": sampler,
        "requested": args.trials,
        "trained": len(trained),
        "over_budget_trials": sum(1 for t in trials if t.user_attrs.get("feasible") is False),
        "distinct_configs": len({t.user_attrs["config"] for t in trained}),
        "fills": fills,
        "median_fill": statistics.median(fills),
        "min_fill": min(fills),
        "proposals": p.proposals,
        "repaired_over_budget": p.over_budget,
        "repaired_under_filled": p.under_filled,
        "duplicates_redrawn": p.duplicates,
        "ms_per_proposal": 1e3 * p.seconds / max(p.proposals, 1),
        "wall_seconds": time.perf_counter() - start,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budgets", default="0.5M,2M")
    ap.add_argument("--samplers", default="random,tpe")
    ap.add_argument("--trials", type=int, default=6)
    ap.add_argument("--space", default="search_spaces/mbv2.yaml")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    space = SearchSpace.load(args.space)
    rows = [run_one(b, s, args) for b in args.budgets.split(",") for s in args.samplers.split(",")]
    raw = {b: raw_fit_rate(space, b, 20_000) for b in args.budgets.split(",")}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"hardware": hardware(), "raw_fit_rate": raw, "runs": rows}, indent=2) + "\n")
    lines = [
        "## Proposals that use the budget (CPU)",
        "",
        f"`OMP_NUM_THREADS=1 python -m bench.search_fill --trials {args.trials}` on real Fashion-MNIST, mbv2 space, mode ce, quick preset, "
        f"seed {args.seed}, no final retrain; {hardware()}. Every proposal of the sampler is repaired in-process into "
        "[0.85, 1] of the budget (`nas_kd.proposals`), so no trial is over budget and none is trained twice. "
        "Trial 0 is the uniform baseline. TPE samples at random for its first 10 trials (Optuna's `n_startup_trials`), so with as few "
        "trials as here its rows repeat the random sampler's; 'trained' counts pruned candidates too, as `--trials` does.",
        "",
        "| budget | sampler | trained / requested | over-budget trials | distinct | median fill | min fill | proposals: shrunk / grown / redrawn | ms per proposal | raw uniform draws that fit |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {format_count(parse_budget(r['budget']).macs)} | {r['sampler']} | {r['trained']} / {r['requested']} | {r['over_budget_trials']} | {r['distinct_configs']} | "
            f"{r['median_fill']:.3f} | {r['min_fill']:.3f} | {r['repaired_over_budget']} / {r['repaired_under_filled']} / {r['duplicates_redrawn']} | {r['ms_per_proposal']:.2f} | {100 * raw[r['budget']]:.2f}% |"
        )
    write_section("search-fill", "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
