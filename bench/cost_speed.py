"""How fast the cost model answers: fvcore `measure` of one new candidate, and rejecting an
over-budget one on the analytic path (no network built). Writes the "cost" section of
docs/BENCHMARKS.md.

    .venv/bin/python -m bench.cost_speed [--candidates 30] [--rejects 300] [--budget 2M]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import statistics
import sys
import time

import torch

from bench._report import hardware, write_section
from nas_kd.config import format_count, parse_budget
from nas_kd.cost import _measure, analytic_cost, measure
from nas_kd.device import torch_threads
from nas_kd.space import SearchSpace

SPACES = ["search_spaces/mbv2.yaml", "search_spaces/resnet.yaml"]
INPUTS = {"fashion-mnist": (1, 28, 28), "cifar10": (3, 32, 32)}


def median_ms(times: list[float]) -> float:
    return 1000 * statistics.median(times)


def time_measure(space: SearchSpace, shape, n: int, seed: int) -> float:
    """Median wall time of `measure` on ``n`` distinct candidates, cache cleared (build + trace)."""
    rng, times = random.Random(seed), []
    for _ in range(n):
        cfg = space.random_config(rng)
        _measure.cache_clear()
        start = time.perf_counter()
        measure(cfg, shape, 10)
        times.append(time.perf_counter() - start)
    return median_ms(times)


def time_reject(space: SearchSpace, shape, budget, n: int, seed: int) -> tuple[float, int]:
    """Median wall time to draw nothing but decide 'over budget' for ``n`` over-budget candidates."""
    rng, times, drawn = random.Random(seed), [], 0
    while len(times) < n:
        cfg = space.random_config(rng)
        drawn += 1
        start = time.perf_counter()
        cost = analytic_cost(cfg, shape, 10)
        fits = budget.fits(cost.macs, cost.params)
        elapsed = time.perf_counter() - start
        if not fits:
            times.append(elapsed)
    return median_ms(times), drawn


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=30, help="fvcore measurements per space and input")
    parser.add_argument("--rejects", type=int, default=300, help="analytic rejections per space and input")
    parser.add_argument("--budget", default="2M")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dry-run", action="store_true", help="print, do not write docs/BENCHMARKS.md")
    args = parser.parse_args(argv)
    budget = parse_budget(args.budget)
    default_threads = torch.get_num_threads()
    load_before = os.getloadavg()[0]

    rows = []
    for path in SPACES:
        space = SearchSpace.load(path)
        for name, shape in INPUTS.items():
            fv_default = time_measure(space, shape, args.candidates, args.seed)
            with torch_threads(1):
                fv_one = time_measure(space, shape, args.candidates, args.seed)
            reject, drawn = time_reject(space, shape, budget, args.rejects, args.seed)
            low = measure(space.smallest(), shape, 10)
            high = measure(space.largest(), shape, 10)
            rows.append(
                f"| {space.name} | {space.size():,} | {name} {'x'.join(map(str, shape))} "
                f"| {format_count(low.macs)} - {format_count(high.macs)} "
                f"| {fv_default:.1f} | {fv_one:.1f} | {reject:.3f} | {100 * args.rejects / drawn:.0f}% |"
            )
            print(rows[-1], flush=True)

    command = "python -m bench.cost_speed " + " ".join(sys.argv[1:] if argv is None else argv)
    body = "\n".join(
        [
            "## Cost model speed",
            "",
            f"Command: `{command.strip()}`  ",
            f"Hardware: {hardware()}; load average {load_before:.1f} at start, "
            f"{os.getloadavg()[0]:.1f} at end (other processes share the cores)  ",
            f"Date: {dt.date.today().isoformat()}; seed {args.seed}; "
            f"{args.candidates} fvcore measurements and {args.rejects} analytic rejections per row.",
            "",
            "*measure*: median ms for `nas_kd.cost.measure` on a new candidate (memo cleared): build the "
            f"network and trace it with fvcore, with torch's default {default_threads} threads and with 1. "
            f"*reject*: median ms for `analytic_cost` + `Budget.fits` on a candidate over `{args.budget}` "
            "(no network built). *over*: share of random candidates over that budget. "
            "Target: under 50 ms each.",
            "",
            "| space | students | input | MACs smallest - largest | measure ms | measure ms (1 thread) "
            "| reject ms | over |",
            "| --- | ---: | --- | --- | ---: | ---: | ---: | ---: |",
            *rows,
        ]
    )
    if args.dry_run:
        print(body)
    else:
        write_section("cost", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
