"""Does pruning help `make search`'s 8 trials? Median pruning on and off, paired by search seed.

`--trials` counts pruned candidates, so in a search of few trials the median rule does not buy
more candidates for the time it saves: it ends some after one brief epoch (31 steps on the quick
preset) and the search has fewer finished ones to rank. This bench runs the same search (budget,
mode kd, quick preset, TPE with its 10 random start-up draws, re-screen and final retrain as
`make search` does them) with pruning ``on`` and ``off`` for each search seed, and compares the
winner's retrain test accuracy, paired by search seed (the arms draw the same candidates, and
retrain on the same seeds, so they share the baseline too), the number of candidates that finished
their brief run, and the wall time.

``--reference-from docs/results/search_startup.json`` takes the ``on`` arm from that record's
start-up-10 rows (the same searches: pruning was on then) instead of training them again; its host
must compute the same CPU numerics as this one (`bench.search_trials.check_host`).

    python -m bench.search_prune --search-seeds 0,1,2,3,4,5,6,7,8,9 --reference-from docs/results/search_startup.json
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
from pathlib import Path

from bench._report import hardware, write_section
from bench.search_gpu import _diff, run_one
from bench.search_trials import (
    BASELINE_HEADER,
    add_search_args,
    arm_difference,
    baseline_cells,
    finished_trials,
    import_arm,
    open_record,
    per_arm,
    quick_options,
    run_arms,
    winners_table,
)
from nas_kd.study import run_dir

__all__ = ["main", "analyse", "render", "import_reference"]

RESULTS = Path(__file__).resolve().parent.parent / "docs" / "results" / "search_prune.json"
ARMS = ("on", "off")


def import_reference(record: dict, source: Path, other_host: bool) -> bool:
    """Add ``source``'s (bench.search_startup's) start-up-10 rows, pruning on, as the ``on`` arm
    (`import_arm`)."""

    def take(r: dict, old: dict) -> dict | None:
        if r["startup"] != 10:
            return None
        row = {k: v for k, v in r.items() if k != "startup"}
        report = run_dir(f"bench-startup_{old['budget']}_t{old['trials']}_u10_s{r['search_seed']}") / "report.json"
        if "finished" not in row and report.is_file():  # that search's own report, where this machine still has it
            row["finished"] = finished_trials(json.loads(report.read_text()))
        return row

    return import_arm(record, source, "search_prune", "prune", "on", take, other_host)


def analyse(rows: list[dict]) -> dict:
    per = per_arm(rows, "prune")
    versus = arm_difference(rows, "prune", "off", "on") if {"on", "off"} <= set(per) else None
    return {"per_arm": per, "off_minus_on": versus}


def render(record: dict) -> str:
    a = analyse(record["rows"])
    lines = [
        f"## Does pruning help {record['trials']} trials? (CPU, {record['budget']})",
        "",
        f"{' then '.join(f'`{c}`' for c in record['commands'])} ({', '.join(record['dates'])}, {record['hardware']}; budget {record['budget']}, {record['trials']} trials, TPE (10 random start-up draws, the baseline first), mode kd, quick preset, re-screen of the top 3, {record['retrain_seeds']} retrain seeds per search).",
        "",
        f"| pruning | searches | candidates that finished the brief run (mean) | winner = the baseline | {BASELINE_HEADER} | median wall s |",
        "|---|---|---|---|---|---|---|",
    ]
    for arm, c in a["per_arm"].items():
        mine = [r for r in record["rows"] if r["prune"] == arm]
        finished = [r["finished"] for r in mine if r.get("finished") is not None]
        lines.append(
            f"| {arm} | {c['searches']} | {statistics.fmean(finished):.1f} of {record['trials']} | {c['winner_is_baseline']} | {baseline_cells(c)} | {c['median_wall_seconds']:.0f} |"
            if finished
            else f"| {arm} | {c['searches']} | - | {c['winner_is_baseline']} | {baseline_cells(c)} | {c['median_wall_seconds']:.0f} |"
        )
    lines += ["", "*wall s*: trials, re-screen and retrains; a search seed's first search (the imported arm, where there is one) also trained the baselines (6 full runs), so the arms' wall times do not compare."]
    if a["off_minus_on"]:
        lines += [
            "",
            f"**Pruning off minus on**, the winner's mean test accuracy paired by search seed: **{_diff(a['off_minus_on'])}** points.",
        ]
    lines += ["", *winners_table(record["rows"], "prune", "pruning")]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arms", default="on,off", help="on, off or both (the first trains the baselines)")
    ap.add_argument("--trials", type=int, default=8, help="trials per search (make search's quick preset: 8)")
    ap.add_argument(
        "--reference-from",
        default=None,
        help="a bench.search_startup record whose start-up-10 rows are the 'on' arm",
    )
    add_search_args(ap, "0,1,2,3,4")
    args = ap.parse_args(argv)
    arms = args.arms.split(",")
    if any(a not in ARMS for a in arms):
        print(f"search_prune: --arms takes on and/or off, got {args.arms}", file=sys.stderr)
        return 2
    if not args.render:
        command = shlex.join(
            ["python", "-m", "bench.search_prune", *(sys.argv[1:] if argv is None else argv)]
        )
        fresh = {"commands": [], "dates": [], "hardware": hardware(), "budget": args.budget, "trials": args.trials, "retrain_seeds": args.retrain_seeds, "rows": []}
        record, _ = open_record(RESULTS, fresh, "search_prune", ("trials", "retrain_seeds", "budget"), args.other_host, command)
        if record is None or (args.reference_from and not import_reference(record, Path(args.reference_from), args.other_host)):
            return 2

        def search(arm: str, seed: int, baselines: bool) -> tuple[dict, int]:
            return run_one(quick_options(args, f"bench-prune_{args.budget}_t{args.trials}_{arm}_s{seed}", args.trials, seed, baselines, prune=arm == "on"), log=lambda text: print(text, flush=True)), args.trials

        run_arms(record, RESULTS, args.search_seeds, arms, "prune", search)
    record = json.loads(RESULTS.read_text())
    write_section(f"search-prune{'' if record['budget'] == '2M' else '-' + record['budget']}", render(record))
    print(render(record))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
