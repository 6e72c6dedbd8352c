"""How many trials does a search need? The same search at two trial counts, paired by search seed.

`make search` on a CPU runs the quick preset's trial count. Optuna's TPE proposes its first 10
candidates at random (``n_startup_trials``), so a search of 8 trials is a random search with the
uniform baseline as its first candidate. This bench runs the TPE search at each ``--trials``
count for each search seed (budget, mode kd, quick preset, re-screen and final retrain as
`make search` does them) and compares:

- per count: the winner's retrain test accuracy minus the uniform baseline's (kd), paired by
  retrain seed, pooled over the search seeds; how often the winner is the baseline itself;
  the search's wall time (trials, re-screen and retrains);
- the larger count minus the smaller: the winner's mean test accuracy, paired by search seed
  (each search seed's searches retrain on the same seeds, so the baseline is the same too).

    python -m bench.search_trials --trials 8,24 --search-seeds 0,1,2     # 2-core CPU, ~45 min
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import shlex
import statistics
import sys
from pathlib import Path

from bench._report import budget_slug, hardware, write_section
from bench.search_gpu import _diff, _seeds, options, run_one
from nas_kd.stats import paired_difference

__all__ = ["main", "analyse", "render", "per_arm", "disjoint_searches", "baseline_cells", "BASELINE_HEADER", "arm_difference", "add_search_args", "check_host", "open_record", "run_arms", "winners_table", "quick_options"]

RESULTS = Path(__file__).resolve().parent.parent / "docs" / "results" / "search_trials.json"  # 2M: make search's default


def results_path(budget: str) -> Path:
    """One record per budget (2M keeps the first record's name): a run at another budget never
    overwrites the 2M rows."""
    return RESULTS if budget == "2M" else RESULTS.with_name(f"search_trials_{budget_slug(budget)}.json")


def section_name(budget: str) -> str:
    return "search-trials" if budget == "2M" else f"search-trials-{budget_slug(budget)}"


def _baseline(report: dict) -> dict:
    """The uniform baseline's retrains in kd (``test_by_seed``) and, since 2026-12-07, in plain ce
    (``ce_test_by_seed``: what a user gets by hand; bench.search_vs_ce reads it)."""
    base = report["baselines"]
    out = {"describe": base["describe"], "macs": base["macs"], "test_by_seed": _seeds(base["modes"]["kd"])}
    if "ce" in base["modes"]:
        out["ce_test_by_seed"] = _seeds(base["modes"]["ce"])
    return out


def _row(report: dict, trials: int, seed: int, baseline: dict) -> dict:
    w = report["winner"]
    return {
        "trials": trials,
        "search_seed": seed,
        "wall_seconds": report["bench_seconds"],
        "finished": finished_trials(report),
        "winner": {"describe": w["describe"], "macs": w["macs"], "search_val_accuracy": w["search_val_accuracy"], "test_by_seed": _seeds(w)},
        "baseline": baseline,
    }


def finished_trials(report: dict) -> int:
    """Candidates that finished their brief run (COMPLETE; not pruned, failed or over budget)."""
    return sum(t.get("state") == "COMPLETE" and t.get("feasible", True) for t in report.get("trials", []))


def _mean_by_search(rows: list[dict], side: str) -> dict[int, float]:
    """Per search seed, the mean test accuracy of its winner or baseline over the retrain seeds."""
    return {r["search_seed"]: statistics.fmean(r[side]["test_by_seed"].values()) for r in rows}


def disjoint_searches(rows: list[dict]) -> list[int]:
    """Search seeds, in order, whose retrain seeds share none with an earlier one kept. Search s
    retrains its winner and the baseline on seeds s+1..s+3, so neighbouring searches share two of
    their three baseline runs: their winner-minus-baseline differences are not independent and an
    interval over every search is too narrow. Over these (0, 3, 6, 9 of ten) the pairs are."""
    kept, used = [], set()
    for r in sorted(rows, key=lambda r: r["search_seed"]):
        seeds = set(r["baseline"]["test_by_seed"]) | set(r["winner"]["test_by_seed"])
        if used.isdisjoint(seeds):
            kept.append(r["search_seed"])
            used |= seeds
    return kept


# The winner-against-baseline columns every paired-search table shows (`baseline_cells`).
BASELINE_HEADER = "winner - uniform baseline (kd), test, points [95% CI], one pair per search seed | the same, searches with disjoint retrain seeds (independent pairs)"


def baseline_cells(c: dict) -> str:
    """`BASELINE_HEADER`'s two cells for one arm of `per_arm`."""
    d = c["winner_minus_baseline_disjoint"]
    return f"{_diff(c['winner_minus_baseline_by_search'])} | {_diff(d)} (search seeds {', '.join(map(str, d['seeds']))})"


def per_arm(rows: list[dict], key: str) -> dict:
    """Per value of ``key`` (an arm: a trial count, a TPE start-up count), the winner against the
    uniform baseline: one pair per search seed, and per (search seed, retrain seed)."""
    per = {}
    for n in sorted({r[key] for r in rows}):
        mine = [r for r in rows if r[key] == n]
        kept = set(disjoint_searches(mine))
        independent = [r for r in mine if r["search_seed"] in kept]
        # Winner minus baseline, one pair per (search seed, retrain seed).
        w = {(r["search_seed"], s): a for r in mine for s, a in r["winner"]["test_by_seed"].items()}
        b = {(r["search_seed"], s): a for r in mine for s, a in r["baseline"]["test_by_seed"].items()}
        keys = sorted(w)
        per[n] = {
            "searches": len(mine),
            "winner_is_baseline": sum(r["winner"]["describe"] == r["baseline"]["describe"] for r in mine),
            "winner_minus_baseline": paired_difference(dict(enumerate(w[k] for k in keys)), dict(enumerate(b[k] for k in keys))).to_dict(),
            # The search seed is the unit a user re-rolls: one pair per search (means over its retrain seeds).
            "winner_minus_baseline_by_search": paired_difference(_mean_by_search(mine, "winner"), _mean_by_search(mine, "baseline")).to_dict(),
            "winner_minus_baseline_disjoint": paired_difference(_mean_by_search(independent, "winner"), _mean_by_search(independent, "baseline")).to_dict(),
            "median_wall_seconds": statistics.median(r["wall_seconds"] for r in mine),
        }
    return per


def arm_difference(rows: list[dict], key: str, arm: object, reference: object) -> dict:
    """Arm minus reference: the winner's mean test accuracy, paired by search seed (each search
    seed's searches retrain on the same seeds, so they share the baseline too)."""
    winners = {a: _mean_by_search([r for r in rows if r[key] == a], "winner") for a in (arm, reference)}
    return paired_difference(winners[arm], winners[reference]).to_dict()


# The procedure these records were measured with: median pruning (the quick preset's default
# until 2026-12-02) and the re-screen of the top 3 (its default but for 2026-12-03). Pinned, so
# that a record extended after a default changes still pairs like with like.
RECORDED = {"prune": True, "rescreen": 3}


def quick_options(args, study: str, trials: int, seed: int, baselines: bool, **arm):
    """The options of one quick-preset TPE search (mode kd, fashion-mnist) of a paired-search
    bench, with `RECORDED`'s procedure unless the arm sets it."""
    return options(
        args.budget, "tpe", study=study, space=args.space, dataset="fashion-mnist", mode="kd", trials=trials, preset="quick",
        seed=seed, retrain_seeds=args.retrain_seeds, baselines=baselines, progress=False, **{**RECORDED, **arm},
    )  # fmt: skip


def winners_table(rows: list[dict], key: str, label: str, descending: bool = False) -> list[str]:
    """Markdown lines: per search seed and arm (``rows[i][key]``, headed ``label``; numeric arms
    largest first with ``descending``), the winner, its brief score and mean retrain test accuracy,
    and the baseline's."""
    lines = [f"| search seed | {label} | winner | MACs | brief val | winner test % (mean of retrain seeds) | baseline test % |", "|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["search_seed"], -r[key] if descending else r[key])):
        w, b = r["winner"], r["baseline"]
        lines.append(
            f"| {r['search_seed']} | {r[key]} | `{w['describe']}` | {w['macs'] / 1e6:.2f}M | {100 * w['search_val_accuracy']:.2f} | {100 * statistics.fmean(w['test_by_seed'].values()):.2f} | {100 * statistics.fmean(b['test_by_seed'].values()):.2f} |"
        )
    return lines


def analyse(rows: list[dict]) -> dict:
    per_count = per_arm(rows, "trials")
    counts = sorted(per_count)
    versus = None
    if len(counts) >= 2:
        lo, hi = counts[0], counts[-1]
        versus = {"more": hi, "fewer": lo, "more_minus_fewer": arm_difference(rows, "trials", hi, lo)}
    return {"per_count": per_count, "versus": versus}


def render(record: dict) -> str:
    a = analyse(record["rows"])
    lines = [
        "## How many trials does the CPU search need? (CPU)" if record["budget"] == "2M" else f"## How many trials does the CPU search need at {record['budget']}? (CPU)",
        "",
        f"{' then '.join(f'`{c}`' for c in record.get('commands') or [record['command']])} ({', '.join(record.get('dates') or [record['date']])}, {record['hardware']}; budget {record['budget']}, TPE, mode kd, quick preset, {record['retrain_seeds']} retrain seeds per search, median pruning and the re-screen of the top 3, the quick defaults when these ran).",
        "",
        f"| trials | searches | winner = the baseline | {BASELINE_HEADER} | the same, one pair per search seed x retrain seed (not independent: 3 share a winner) | median wall s |",
        "|---|---|---|---|---|---|---|",
    ]
    for n, c in a["per_count"].items():
        lines.append(f"| {n} | {c['searches']} | {c['winner_is_baseline']} | {baseline_cells(c)} | {_diff(c['winner_minus_baseline'])} | {c['median_wall_seconds']:.0f} |")
    lines += ["", "*wall s*: trials, re-screen and retrains; the first count's searches also train the baselines (6 full runs) that the others reuse, so the columns do not compare."]
    lines += ["", *winners_table(record["rows"], "trials", "trials")]
    if record.get("note"):  # what a later measurement found about these rows, written by hand
        lines += ["", f"**Note.** {record['note']}"]
    if a["versus"]:
        v = a["versus"]
        lines += ["", f"{v['more']} trials minus {v['fewer']}, the winner's mean test accuracy paired by search seed: {_diff(v['more_minus_fewer'])}."]
    return "\n".join(lines)


def run_arms(record: dict, results: Path, search_seeds: str, arms: list, key: str, search) -> None:
    """Each arm's search for each search seed, skipping those ``record`` holds; the record is
    written as each search ends. ``search(arm, seed, baselines)`` runs one and returns its report
    and trial count; the same retrain seeds give the same baseline, so only a seed's first search
    trains it."""
    rows = record["rows"]
    for seed in (int(s) for s in search_seeds.split(",")):
        baseline = next((r["baseline"] for r in rows if r["search_seed"] == seed), None)
        for arm in arms:
            if any((r[key], r["search_seed"]) == (arm, seed) for r in rows):
                continue
            report, trials = search(arm, seed, baseline is None)
            baseline = baseline or _baseline(report)
            rows.append({key: arm, **_row(report, trials, seed, baseline)})
            results.write_text(json.dumps(record, indent=1) + "\n")


def _numerics(hardware_line: str) -> str | None:
    found = re.search(r"CPU numerics (\S+)", hardware_line or "")
    return found.group(1) if found else None


def check_host(old: dict, record: dict, name: str, other_host: bool) -> bool:
    """May ``record`` (being extended from ``old``) take rows from this host? Rows pair run for run
    only where the CPU numerics match (VMs of one kind round differently; docs/SEARCH.md). Another
    fingerprint is refused unless ``other_host``; a record older than fingerprints is extended
    with a note. Either way ``record['hardware']`` keeps the old host and names this one."""
    here = hardware()
    before = old.get("hardware") or "unknown"
    if before == here or here in before.split(" | extended on "):
        record["hardware"] = before
        return True
    theirs, ours = _numerics(before), _numerics(here)
    if theirs is not None and theirs != ours and not other_host:
        print(f"{name}: this record was measured with CPU numerics {theirs}, this host computes {ours}: its rows would not pair with new ones; run it on that host, move the file away, or pass --other-host (new rows then pair among themselves only)", file=sys.stderr)
        return False
    print(f"{name}: note: this record was made on '{before}', this host is '{here}': new rows pair within this host only", file=sys.stderr)
    record["hardware"] = f"{before} | extended on {here}"
    return True


def open_record(results: Path, fresh: dict, name: str, same: tuple[str, ...], other_host: bool, command: str) -> tuple[dict | None, dict]:
    """(``fresh`` extended by the record at ``results``: its rows, commands and dates; the record
    as it was, or {}), with this run's command and date added. None in place of the record (after
    one line) when that record was made with other CPU numerics (`check_host`) or differs in a
    field of ``same``: its rows would not pair with these."""
    old: dict = {}
    if results.is_file():
        old = json.loads(results.read_text())
        if not check_host(old, fresh, name, other_host):
            return None, old
        differ = [k for k in same if old.get(k) != fresh[k]]
        if differ:
            print(f"{name}: {results.name} holds searches with {', '.join(f'{k} {old.get(k)}' for k in differ)}, this run asks for {', '.join(f'{k} {fresh[k]}' for k in differ)}: their rows would not pair; use those, or move the file away", file=sys.stderr)
            return None, old
        fresh.update(rows=old["rows"], commands=old.get("commands") or [old["command"]], dates=old.get("dates") or [old["date"]])
    fresh["commands"].append(command)
    if dt.date.today().isoformat() not in fresh["dates"]:
        fresh["dates"].append(dt.date.today().isoformat())
    return fresh, old


def import_arm(record: dict, source: Path, name: str, key: str, arm: str, take, other_host: bool, rows_named: str = "") -> bool:
    """Add the rows of another bench's record ``source`` that ``take`` selects (and rewrites, or
    None to skip) as this record's ``arm`` of ``key``, so finished searches are not trained again;
    False (and one line) when they cannot pair with this record's searches: other trials, retrain
    seeds or budget, or another host's numerics (`check_host`). ``rows_named`` qualifies the source
    in the commands' note (e.g. "'s pruning-off rows")."""
    old = json.loads(source.read_text())
    if any(old.get(k) != record[k] for k in ("trials", "retrain_seeds", "budget")):
        print(f"{name}: {source.name} holds {old.get('trials')}-trial searches at {old.get('budget')} with {old.get('retrain_seeds')} retrain seeds: they would not pair with these", file=sys.stderr)
        return False
    if not check_host(old, {"hardware": record["hardware"]}, name, other_host):
        return False
    have = {(r[key], r["search_seed"]) for r in record["rows"]}
    for r in old["rows"]:
        row = take(r, old)
        if row is not None and (arm, r["search_seed"]) not in have:
            record["rows"].append({key: arm, **row, "from": f"{source.name} ({', '.join(old['dates'])}; {old['hardware']})"})
    note = f"(arm '{arm}' from {source.name}{rows_named}: {' then '.join(c for c in old['commands'] if not c.startswith('('))})"
    if note not in record["commands"]:
        record["commands"].insert(len(record["commands"]) - 1, note)  # before this run's own command
    return True


def add_search_args(ap: argparse.ArgumentParser, search_seeds: str) -> None:
    """The options every paired-search bench shares (this one and bench.search_startup)."""
    ap.add_argument("--search-seeds", default=search_seeds, help="comma-separated; search s retrains on s+1..s+R (R: --retrain-seeds), so seeds R apart (0,3,6,...) give independent pairs against the baseline (see disjoint_searches)")
    ap.add_argument("--budget", default="2M")
    ap.add_argument("--retrain-seeds", type=int, default=3)
    ap.add_argument("--space", default="search_spaces/mbv2.yaml")
    ap.add_argument("--render", action="store_true", help="rewrite the section from the JSON; train nothing")
    ap.add_argument("--other-host", action="store_true", help="extend a record measured with other CPU numerics (refused otherwise)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", default="8,24", help="trial counts, comma-separated (the first trains the baselines)")
    add_search_args(ap, "0,1,2")
    args = ap.parse_args(argv)
    results = results_path(args.budget)
    if not args.render:
        counts = [int(n) for n in args.trials.split(",")]
        command = shlex.join(["python", "-m", "bench.search_trials", *(sys.argv[1:] if argv is None else argv)])
        fresh = {"commands": [], "dates": [], "hardware": hardware(), "budget": args.budget, "retrain_seeds": args.retrain_seeds, "rows": []}
        record, _ = open_record(results, fresh, "search_trials", ("retrain_seeds",), args.other_host, command)
        if record is None:
            return 2

        def search(n: int, seed: int, baselines: bool) -> tuple[dict, int]:
            return run_one(quick_options(args, f"bench-trials_{args.budget}_t{n}_s{seed}", n, seed, baselines), log=lambda text: print(text, flush=True)), n

        run_arms(record, results, args.search_seeds, counts, "trials", search)
    record = json.loads(results.read_text())
    write_section(section_name(args.budget), render(record))
    print(render(record))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
