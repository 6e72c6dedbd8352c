"""Does the re-screen help `make search`'s 8 trials? `--rescreen 3` against the brief run alone, paired by search seed.

`make search` re-screens the brief run's top 3 and the uniform baseline with one full-schedule run
each (about 30 s apiece on a 2-core CPU) and ships the best of them. Within a budget band, where
students differ by tenths of a point, one full-schedule run ranks them worse than the brief run
does (docs/BENCHMARKS.md, "Which brief schedule ranks candidates best?"). This bench runs the same
8-trial searches (budget, mode kd, quick preset without pruning, TPE with its 10 random start-up
draws, final retrain on the same seeds) with ``--rescreen`` set per arm (``0``: the brief run's
best wins) and compares the winner's retrain test accuracy, paired by search seed, and the wall time.

``--reference-from docs/results/search_prune.json`` takes the ``3`` arm from that record's
pruning-off rows (the same searches with the re-screen of the top 3, the quick default) instead of
training them again; its host must compute the same CPU numerics as this one.

    python -m bench.search_rescreen --arms 0 --search-seeds 0,1,2,3,4,5,6,7,8,9 --reference-from docs/results/search_prune.json
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from bench._report import budget_slug, hardware, write_section
from bench.search_gpu import _diff, run_one
from bench.search_trials import (
    BASELINE_HEADER,
    add_search_args,
    arm_difference,
    baseline_cells,
    import_arm,
    open_record,
    per_arm,
    quick_options,
    run_arms,
    winners_table,
)

__all__ = ["main", "analyse", "render", "import_reference"]

RESULTS = Path(__file__).resolve().parent.parent / "docs" / "results" / "search_rescreen.json"
REFERENCE_ARM = "3"  # `nas-kd search --rescreen 3`, the quick default (but for one day, 2026-12-03)


def results_path(budget: str) -> Path:
    """One record per budget (2M: make search's default, the plain name)."""
    return RESULTS if budget == "2M" else RESULTS.with_name(f"search_rescreen_{budget_slug(budget)}.json")


def import_reference(record: dict, source: Path, other_host: bool) -> bool:
    """Add ``source``'s (bench.search_prune's) pruning-off rows as the ``3`` arm (`import_arm`)."""

    def take(r: dict, _old: dict) -> dict | None:
        return {k: v for k, v in r.items() if k not in ("prune", "from")} if r["prune"] == "off" else None

    return import_arm(record, source, "search_rescreen", "rescreen", REFERENCE_ARM, take, other_host, rows_named="'s pruning-off rows")


def analyse(rows: list[dict]) -> dict:
    per = per_arm(rows, "rescreen")
    versus = {arm: arm_difference(rows, "rescreen", arm, REFERENCE_ARM) for arm in per if arm != REFERENCE_ARM} if REFERENCE_ARM in per else {}
    return {"per_arm": per, "minus_reference": versus}


def render(record: dict) -> str:
    a = analyse(record["rows"])
    lines = [
        f"## Does the re-screen help {record['trials']} trials? (CPU, {record['budget']})",
        "",
        f"{' then '.join(f'`{c}`' for c in record['commands'])} ({', '.join(record['dates'])}, {record['hardware']}; budget {record['budget']}, {record['trials']} trials, TPE (10 random start-up draws, the baseline first), no pruning, mode kd, quick preset, {record['retrain_seeds']} retrain seeds per search). "
        "`--rescreen 3`: the brief top 3 and the uniform baseline trained again on the full schedule (search seed, validation), the best wins; `--rescreen 0`: the brief run's best wins.",
        "",
        f"| --rescreen | searches | winner = the baseline | {BASELINE_HEADER} | median wall s |",
        "|---|---|---|---|---|---|",
    ]
    for arm, c in a["per_arm"].items():
        lines.append(f"| {arm} | {c['searches']} | {c['winner_is_baseline']} | {baseline_cells(c)} | {c['median_wall_seconds']:.0f} |")
    imported = any(r.get("from") for r in record["rows"])
    lines += ["", "*wall s*: trials, re-screen and retrains; " + ("the baselines' retrains were trained before, by the searches the '3' arm came from, and are in neither arm." if imported else "each search seed's first search (the first arm) also trained the baselines (6 full runs), so the arms' wall times do not compare.")]
    for arm, d in a["minus_reference"].items():
        same = sum(
            r["winner"]["describe"] == next((o["winner"]["describe"] for o in record["rows"] if o["rescreen"] == REFERENCE_ARM and o["search_seed"] == r["search_seed"]), None)
            for r in record["rows"]
            if r["rescreen"] == arm
        )
        lines += ["", f"**`--rescreen {arm}` minus `--rescreen {REFERENCE_ARM}`**, the winner's mean test accuracy paired by search seed: **{_diff(d)}** points (the same winner in {same} of {len(d['differences'])} searches)."]
    lines += ["", *winners_table(record["rows"], "rescreen", "--rescreen")]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arms", default="3,0", help="--rescreen values, comma-separated (the first of a search seed trains the baselines)")
    ap.add_argument("--trials", type=int, default=8, help="trials per search (make search's quick preset: 8)")
    ap.add_argument("--reference-from", default=None, help="a bench.search_prune record whose pruning-off rows are the '3' arm")
    add_search_args(ap, "0,1,2,3,4")
    args = ap.parse_args(argv)
    arms = args.arms.split(",")
    if any(not a.isdigit() for a in arms):
        print(f"search_rescreen: --arms takes --rescreen values (0, 3, ...), got {args.arms}", file=sys.stderr)
        return 2
    results = results_path(args.budget)
    if not args.render:
        command = shlex.join(["python", "-m", "bench.search_rescreen", *(sys.argv[1:] if argv is None else argv)])
        fresh = {"commands": [], "dates": [], "hardware": hardware(), "budget": args.budget, "trials": args.trials, "retrain_seeds": args.retrain_seeds, "rows": []}
        record, _ = open_record(results, fresh, "search_rescreen", ("trials", "retrain_seeds", "budget"), args.other_host, command)
        if record is None or (args.reference_from and not import_reference(record, Path(args.reference_from), args.other_host)):
            return 2

        def search(arm: str, seed: int, baselines: bool) -> tuple[dict, int]:
            return run_one(quick_options(args, f"bench-rescreen_{args.budget}_t{args.trials}_r{arm}_s{seed}", args.trials, seed, baselines, prune=False, rescreen=int(arm)), log=lambda text: print(text, flush=True)), args.trials

        run_arms(record, results, args.search_seeds, arms, "rescreen", search)
    if not results.is_file():
        print(f"search_rescreen: nothing to render: no record at {results}", file=sys.stderr)
        return 2
    record = json.loads(results.read_text())
    write_section(f"search-rescreen{'' if record['budget'] == '2M' else '-' + budget_slug(record['budget'])}", render(record))
    print(render(record))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
