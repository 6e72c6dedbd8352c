"""Does TPE learn anything inside `make search`'s few trials? TPE start-up counts, paired by search seed.

Optuna's TPE draws its first ``n_startup_trials`` candidates at random (10 by default), so the
CPU preset's 8-trial search never models: it is a random search with the uniform baseline first.
This bench runs the same search (budget, mode kd, quick preset, re-screen and final retrain as
`make search` does them) with each ``--startup`` count for each search seed, and compares:

- per count: the winner's retrain test accuracy minus the uniform baseline's (kd), one pair per
  search seed; how often the winner is the baseline itself; the search's wall time;
- each other count minus the first (Optuna's default 10 first): the winner's mean test accuracy,
  paired by search seed. The arms share a search seed's random draws up to the smaller start-up
  count and its retrain seeds, so the difference is what the modelled candidates buy.

    python -m bench.search_startup --startup 10,4 --search-seeds 0,1,2,3,4   # 2-core CPU, ~75 min
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from bench._report import hardware, write_section
from bench.search_gpu import _diff, run_one
from bench.search_trials import (
    BASELINE_HEADER,
    add_search_args,
    arm_difference,
    baseline_cells,
    open_record,
    per_arm,
    quick_options,
    run_arms,
    winners_table,
)

__all__ = ["main", "analyse", "render"]

RESULTS = Path(__file__).resolve().parent.parent / "docs" / "results" / "search_startup.json"


def results_path(budget: str) -> Path:
    return RESULTS if budget == "2M" else RESULTS.with_name(f"search_startup_{budget}.json")


def section_name(budget: str) -> str:
    return "search-startup" if budget == "2M" else f"search-startup-{budget}"


def analyse(rows: list[dict], reference: int) -> dict:
    per = per_arm(rows, "startup")
    return {"per_startup": per, "versus": {k: arm_difference(rows, "startup", k, reference) for k in per if k != reference}}


def render(record: dict) -> str:
    reference = record["startup"][0]
    a = analyse(record["rows"], reference)
    lines = [
        f"## Does TPE learn anything in {record['trials']} trials? (CPU{', ' + record['budget'] if record['budget'] != '2M' else ''})",
        "",
        f"{' then '.join(f'`{c}`' for c in record['commands'])} ({', '.join(record['dates'])}, {record['hardware']}; budget {record['budget']}, {record['trials']} trials, TPE (multivariate), mode kd, quick preset, {record['retrain_seeds']} retrain seeds per search, median pruning and the re-screen of the top 3, the quick defaults when these ran).",
        "",
        f"| TPE start-up trials | searches | winner = the baseline | {BASELINE_HEADER} | winner minus the start-up-"
        + f"{reference} winner, paired by search seed | median wall s |",
        "|---|---|---|---|---|---|---|",
    ]
    for k, c in a["per_startup"].items():
        versus = _diff(a["versus"][k]) if k in a["versus"] else "(reference)"
        lines.append(f"| {k} | {c['searches']} | {c['winner_is_baseline']} | {baseline_cells(c)} | {versus} | {c['median_wall_seconds']:.0f} |")
    lines += ["", f"Start-up {reference} at {record['trials']} trials is a random search (the baseline first); a smaller count lets TPE propose the last trials from the first ones. *wall s*: trials, re-screen and retrains; each search seed's first search also trains the baselines (6 full runs)."]
    if record.get("note"):  # what a later measurement found about these rows, written by hand
        lines += ["", f"**Note.** {record['note']}"]
    lines += ["", *winners_table(record["rows"], "startup", "start-up", descending=True)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--startup", default="10,4", help="TPE start-up counts, comma-separated; the first is the reference and trains the baselines")
    ap.add_argument("--trials", type=int, default=8, help="trials per search (make search's quick preset: 8)")
    add_search_args(ap, "0,1,2,3,4")
    args = ap.parse_args(argv)
    results = results_path(args.budget)
    if not args.render:
        counts = [int(k) for k in args.startup.split(",")]
        if any(k < 1 for k in counts):
            print(f"search_startup: start-up counts must be at least 1, got {args.startup}", file=sys.stderr)
            return 2
        command = shlex.join(["python", "-m", "bench.search_startup", *(sys.argv[1:] if argv is None else argv)])
        fresh = {"commands": [], "dates": [], "hardware": hardware(), "budget": args.budget, "trials": args.trials, "startup": counts, "retrain_seeds": args.retrain_seeds, "rows": []}
        record, old = open_record(results, fresh, "search_startup", ("trials", "retrain_seeds"), args.other_host, command)
        if record is None:
            return 2
        if old:
            if old["startup"][0] != counts[0]:  # the reference every other count is paired with
                print(f"search_startup: {results.name} pairs every count with start-up {old['startup'][0]}: put it first, or move the file away", file=sys.stderr)
                return 2
            record["startup"] = old["startup"] + [k for k in counts if k not in old["startup"]]

        def search(k: int, seed: int, baselines: bool) -> tuple[dict, int]:
            return run_one(quick_options(args, f"bench-startup_{args.budget}_t{args.trials}_u{k}_s{seed}", args.trials, seed, baselines, startup_trials=k), log=lambda text: print(text, flush=True)), args.trials

        run_arms(record, results, args.search_seeds, counts, "startup", search)
    record = json.loads(results.read_text())
    write_section(section_name(args.budget), render(record))
    print(render(record))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
