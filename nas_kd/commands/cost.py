"""`nas-kd cost`: what a search space contains and what it costs on a dataset; trains nothing."""

from __future__ import annotations

import random

from nas_kd.commands.common import add_data_args

__all__ = ["register", "run"]


def register(sub) -> None:
    p = sub.add_parser(
        "cost", help="size of a search space, MACs, params, peak memory, weight bytes and latency of its members; the baseline that fits a budget"
    )
    p.add_argument("--space", required=True, help="search space YAML file, e.g. search_spaces/mbv2.yaml")
    add_data_args(p)
    p.add_argument("--budget", default=None, help="e.g. 2M (MACs), params:200k, memory:64k, size:100k, latency:2ms, or several joined by commas")
    p.add_argument("--precision", default="int8", choices=["int8", "fp32"], help="precision peak memory and weight bytes are counted at (default int8)")
    p.add_argument(
        "--samples", type=int, default=1000, help="random members drawn to estimate the fitting fraction"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the random members")
    p.set_defaults(func=run)


def run(args) -> int:
    from nas_kd.config import format_count, format_quantity, get_precision, parse_budget
    from nas_kd.cost import measure
    from nas_kd.data import dataset_info
    from nas_kd.errors import UserError
    from nas_kd.meter import BudgetMeter, admits_largest, describe_values
    from nas_kd.space import SearchSpace

    budget = parse_budget(args.budget, args.precision) if args.budget is not None else None  # bad input fails first
    precision = get_precision(args.precision)
    if args.samples < 1:
        raise UserError(f"--samples must be at least 1, got {args.samples}")
    space = SearchSpace.load(args.space)
    info = dataset_info(args.dataset, args.data_dir)
    shape, k = (info.channels, info.height, info.width), info.num_classes

    smallest, largest = space.smallest(), space.largest()
    small_cost = measure(smallest, shape, k)
    meter = BudgetMeter(budget or parse_budget("1G", args.precision), shape, k, space)
    small_values = {**meter.values(smallest), "macs": small_cost.macs, "params": small_cost.params}
    if budget is not None and not budget.fits(**small_values):
        raise UserError(
            f"budget {budget.describe()} is below the smallest member of {space.name} on {info.name} "
            f"({smallest.describe()}: {describe_values(budget, small_values)}): raise the budget"
        )

    # Measuring a student raises its meter's slowest ruler time (what a search judges at); the
    # figures use a meter of their own, so every fit below (the smallest member's, the baseline's,
    # the random members') is judged at one speed: the table's ruler timed now.
    shown = BudgetMeter(meter.budget, shape, k, space, table=meter.table)

    def figures(cfg, latency_note: str = "") -> str:
        """MACs and params, then peak memory, weight bytes and the latency measured now."""
        f = shown.footprint(cfg)
        return (
            f"{measure(cfg, shape, k).describe()}, peak memory {format_quantity('memory', f['memory_bytes'])}, "
            f"size {format_quantity('size', f['size_bytes'])} ({precision.name}), latency {format_quantity('latency', f['latency_ms'])}{latency_note}  {cfg.describe()}"
        )

    rows = [
        (
            "space",
            f"{space.name} ({args.space}): {space.block}, {len(space.stages)} stages, {space.size():,} students",
        ),
        ("input", f"{info.name}: {'x'.join(map(str, shape))}, {k} classes"),
        ("smallest", figures(smallest)),
        ("largest", figures(largest)),
    ]
    uniform = [measure(member, shape, k) for member in space.uniform_members()]
    rows.append((
        "uniform",
        f"{len(uniform)} members (one width, depth and expansion for all stages), "
        f"{format_count(min(c.macs for c in uniform))} to {format_count(max(c.macs for c in uniform))} MACs",
    ))
    if budget is not None:
        # The same table (one ruler timing) for the choice as for the fits: a second table object
        # would time its own ruler, and choose at another moment's speed.
        baseline = space.baseline(budget, shape, k, table=meter.table)
        rows.append(("budget", budget.describe()))
        judged = ""
        if budget.latency is not None:  # the fit is judged on the prediction, not on the measurement shown
            judged = f" (predicted {format_quantity('latency', meter.values(baseline)['latency'])}: the fit is judged on the prediction)"
        rows.append(("baseline", figures(baseline, judged)))
        rng = random.Random(args.seed)
        # analytic_cost equals fvcore's count exactly (tests/test_cost.py) and is ~100x faster;
        # memory and size are exact too, latency is the table's prediction (built on first use).
        fit = sum(budget.fits(**meter.values(space.random_config(rng))) for _ in range(args.samples))
        unbound = admits_largest(meter, space)
        rows.append(("fit", f"{fit} of {args.samples} random members ({100 * fit / args.samples:.1f}%)" + (f"; the {unbound}" if unbound else "")))
    width = max(len(name) for name, _ in rows)
    for name, text in rows:
        print(f"{name:<{width}}  {text}")
    return 0
