"""`nas-kd cost`: what a search space contains and what it costs on a dataset; trains nothing."""

from __future__ import annotations

import random

from nas_kd.commands.common import add_data_args

__all__ = ["register", "run"]


def register(sub) -> None:
    p = sub.add_parser(
        "cost", help="size and MACs/params range of a search space; the baseline that fits a budget"
    )
    p.add_argument("--space", required=True, help="search space YAML file, e.g. search_spaces/mbv2.yaml")
    add_data_args(p)
    p.add_argument("--budget", default=None, help="e.g. 2M (MACs), params:200k, macs:2M,params:200k")
    p.add_argument(
        "--samples", type=int, default=1000, help="random members drawn to estimate the fitting fraction"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the random members")
    p.set_defaults(func=run)


def run(args) -> int:
    from nas_kd.config import format_count, parse_budget
    from nas_kd.cost import analytic_cost, measure
    from nas_kd.data import dataset_info
    from nas_kd.errors import UserError
    from nas_kd.space import SearchSpace

    budget = parse_budget(args.budget) if args.budget is not None else None  # bad input fails first
    if args.samples < 1:
        raise UserError(f"--samples must be at least 1, got {args.samples}")
    space = SearchSpace.load(args.space)
    info = dataset_info(args.dataset, args.data_dir)
    shape, k = (info.channels, info.height, info.width), info.num_classes

    smallest, largest = space.smallest(), space.largest()
    small_cost = measure(smallest, shape, k)
    if budget is not None and not budget.fits(small_cost.macs, small_cost.params):
        raise UserError(
            f"budget {budget.describe()} is below the smallest member of {space.name} on {info.name} "
            f"({smallest.describe()}: {small_cost.describe()}): raise the budget"
        )
    rows = [
        (
            "space",
            f"{space.name} ({args.space}): {space.block}, {len(space.stages)} stages, {space.size():,} students",
        ),
        ("input", f"{info.name}: {'x'.join(map(str, shape))}, {k} classes"),
        ("smallest", f"{small_cost.describe()}  {smallest.describe()}"),
        ("largest", f"{measure(largest, shape, k).describe()}  {largest.describe()}"),
    ]
    uniform = [measure(member, shape, k) for member in space.uniform_members()]
    rows.append((
        "uniform",
        f"{len(uniform)} members (one width, depth and expansion for all stages), "
        f"{format_count(min(c.macs for c in uniform))} to {format_count(max(c.macs for c in uniform))} MACs",
    ))
    if budget is not None:
        baseline = space.baseline(budget, shape, k)
        rows.append(("budget", budget.describe()))
        rows.append(("baseline", f"{measure(baseline, shape, k).describe()}  {baseline.describe()}"))
        rng = random.Random(args.seed)
        # analytic_cost equals fvcore's count exactly (tests/test_cost.py) and is ~100x faster.
        costs = (analytic_cost(space.random_config(rng), shape, k) for _ in range(args.samples))
        fit = sum(budget.fits(c.macs, c.params) for c in costs)
        rows.append(("fit", f"{fit} of {args.samples} random members ({100 * fit / args.samples:.1f}%)"))
    width = max(len(name) for name, _ in rows)
    for name, text in rows:
        print(f"{name:<{width}}  {text}")
    return 0
