"""What does `make search` give over the student a user would build by hand? The searched, distilled
winner against the space's uniform baseline trained with plain cross-entropy, paired by search seed.

The paired-search benches (`bench.search_prune`, `bench.search_rescreen`) compared each winner with
the uniform baseline in the search's own mode (kd): the search's part. What a user without nas-kd
would train is the uniform member with plain ``ce``. This bench takes the recorded shipped quick
searches (mode kd, no pruning, re-screen of the top 3, the quick preset's schedules) and trains the
uniform baseline with ``ce`` on each search's retrain seeds, through the code path the search's
final retrain uses (`nas_kd.finalize._train`), where the search did not record its own (rows
recorded since 2026-12-07 keep the search's ce baseline, `bench.search_trials._baseline`), then splits the whole gain into the search's part
(winner - uniform kd, from the record) and distillation's (uniform kd - uniform ce).

The record's runs were trained on another day: before any ``ce`` run, the uniform baseline is
trained again in kd on ``--check-seeds`` and compared with the record to the stored digit; a
mismatch refuses (the rows would pair across code or numerics), unless ``--allow-mismatch``.

    python -m bench.search_vs_ce --budget 2M      # 2-core CPU: 12 ce runs of ~37 s, one kd check
    python -m bench.search_vs_ce --budget 500k
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench._report import hardware, write_section
from bench.search_gpu import _diff
from bench.search_trials import disjoint_searches
from nas_kd.stats import paired_difference

__all__ = ["SOURCES", "Source", "shipped_rows", "analyse", "render", "main"]

RESULTS_DIR = Path(__file__).resolve().parent.parent / "docs" / "results"
RESULTS = RESULTS_DIR / "search_vs_ce.json"
SECTION = "search-vs-ce"


@dataclass(frozen=True)
class Source:
    """Where a budget's shipped quick searches are recorded: the file and its arm run as the
    quick preset runs today."""

    file: str
    key: str
    value: str


SOURCES = {
    "2M": Source("search_prune.json", "prune", "off"),  # seeds 0-9 are search_rescreen.json's '3' arm too
    "500k": Source("search_rescreen_500k.json", "rescreen", "3"),
}


def shipped_rows(budget: str, results_dir: Path | None = None) -> list[dict]:
    """The budget's searches as the quick preset runs them, one row per search seed."""
    src = SOURCES[budget]
    rows = [r for r in json.loads(((results_dir or RESULTS_DIR) / src.file).read_text())["rows"] if str(r.get(src.key)) == src.value]
    seeds = [r["search_seed"] for r in rows]
    if len(set(seeds)) != len(seeds):
        raise SystemExit(f"{src.file}: search seeds {seeds} repeat in arm {src.key}={src.value}")
    return sorted(rows, key=lambda r: r["search_seed"])


def recorded_kd(rows: list[dict]) -> dict[int, float]:
    """The uniform baseline's kd test accuracy per retrain seed; searches sharing a seed must agree."""
    by_seed: dict[int, float] = {}
    for r in rows:
        for s, acc in r["baseline"]["test_by_seed"].items():
            if by_seed.setdefault(int(s), acc) != acc:
                raise SystemExit(f"the record's uniform baseline has two kd results for seed {s}: {by_seed[int(s)]} and {acc}")
    return by_seed


def ce_runs(rows: list[dict], trained: dict[int, float]) -> dict[int, float]:
    """The uniform baseline's ce test accuracy per retrain seed: those trained here and those the
    searches themselves trained (rows recorded since 2026-12-07 keep them); a seed in both must
    agree, or the two would not be the same run."""
    out = dict(trained)
    for r in rows:
        for seed, acc in (r["baseline"].get("ce_test_by_seed") or {}).items():
            if out.setdefault(int(seed), acc) != acc:
                raise SystemExit(f"seed {seed}: the uniform baseline in ce gave {out[int(seed)]} here and {acc} in search {r['search_seed']}: not the same run")
    return out


def analyse(rows: list[dict], ce_by_seed: dict[int, float]) -> dict:
    """Per search seed the means over its retrain seeds; the paired differences over search seeds,
    and kd - ce of the uniform member over the distinct retrain seeds."""
    per_search = []
    for r in rows:
        seeds = sorted(int(s) for s in r["winner"]["test_by_seed"])
        if any(s not in ce_by_seed for s in seeds):
            continue
        per_search.append(
            {
                "search_seed": r["search_seed"],
                "winner": r["winner"]["describe"],
                "winner_macs": r["winner"]["macs"],
                "is_baseline": r["winner"]["describe"] == r["baseline"]["describe"],
                "winner_test": statistics.fmean(r["winner"]["test_by_seed"][str(s)] for s in seeds),
                "uniform_kd_test": statistics.fmean(r["baseline"]["test_by_seed"][str(s)] for s in seeds),
                "uniform_ce_test": statistics.fmean(ce_by_seed[s] for s in seeds),
            }
        )
    by = {p["search_seed"]: p for p in per_search}
    # Neighbouring searches share retrain seeds, so only these give independent pairs.
    disjoint = disjoint_searches([r for r in rows if r["search_seed"] in by])

    def parts(searches) -> dict:
        def diff(a: str, b: str):
            return paired_difference({s: by[s][a] for s in searches}, {s: by[s][b] for s in searches})

        return {
            "winner_minus_ce": diff("winner_test", "uniform_ce_test"),
            "search_part": diff("winner_test", "uniform_kd_test"),
            "distillation_part": diff("uniform_kd_test", "uniform_ce_test"),
        }

    return {
        "searches": len(per_search),
        "per_search": per_search,
        "disjoint_searches": disjoint,
        "disjoint": parts(disjoint),  # the honest intervals
        "all": parts(sorted(by)),  # too narrow: neighbours share baseline runs
        "kd_minus_ce_by_retrain_seed": paired_difference(recorded_kd(rows), ce_by_seed),
    }


def _pts(d) -> str:
    return _diff(d.to_dict())


def _analyse_budget(budget: str, entry: dict) -> dict:
    """`analyse` of one budget's recorded searches with its ce runs (this bench's and the searches' own)."""
    rows = shipped_rows(budget)
    return analyse(rows, ce_runs(rows, {int(s): v for s, v in entry["ce_by_seed"].items()}))


def render(record: dict) -> str:
    lines = [
        "## What does a search give over the uniform student trained with ce? (CPU)",
        "",
        f"`{' then '.join(record['commands'])}` ({', '.join(record['dates'])}, {record['hardware']}). "
        "The winners and the uniform baseline in kd come from the recorded shipped quick searches "
        "(8 trials, TPE with 10 random start-up draws, the uniform baseline first, mode kd, no pruning, re-screen of the top 3, "
        "3 retrain seeds per search: seed+1 to seed+3; the files below); the uniform baseline with ce is the searches' own final retrain where their rows keep it (since 2026-12-07), else trained here on the same retrain seeds "
        "with the same full schedule and code path (`nas_kd.finalize._train`). Test accuracy, read once per run at its end; differences in points, "
        "paired by search seed (each the mean over its 3 retrain seeds), with a two-sided 95% t-interval, over the searches whose retrain seeds share none "
        "(neighbouring searches share two of their three, so their baseline means are not independent: the intervals over every search, below the table, are too narrow); "
        "the last column pairs each distinct retrain seed once.",
        "",
        "| budget | searches with disjoint retrain seeds (of all) | winner (kd) - uniform (ce): what a user gains | winner (kd) - uniform (kd): the search's part | uniform (kd) - uniform (ce): distillation's part | kd - ce of the uniform member, per retrain seed |",
        "|---|---|---|---|---|---|",
    ]
    budgets = [b for b in SOURCES if b in record["budgets"]]
    analyses = {b: _analyse_budget(b, record["budgets"][b]) for b in budgets}
    every = []
    for b, a in analyses.items():
        k = a["kd_minus_ce_by_retrain_seed"]
        d = a["disjoint"]
        lines.append(f"| {b} | {len(a['disjoint_searches'])} of {a['searches']} (search seeds {', '.join(map(str, a['disjoint_searches']))}) | {_pts(d['winner_minus_ce'])} | {_pts(d['search_part'])} | {_pts(d['distillation_part'])} | {_pts(k)} over {len(k.seeds)} seeds |")
        every.append(f"{b}, all {a['searches']} searches: " + ", ".join(f"{label} {_pts(a['all'][key])}" for key, label in (("winner_minus_ce", "what a user gains"), ("search_part", "the search's part"), ("distillation_part", "distillation's part"))))
    lines += ["", "Over every search (too narrow): " + "; ".join(every) + ".", ""]
    for b in budgets:
        entry = record["budgets"][b]
        c = entry["check"]
        same = "identical" if c["match"] else "**different**"
        lines.append(
            f"*Check, {b}*: the uniform baseline (`{entry['uniform']}`) trained again in kd here on seed(s) {', '.join(str(s) for s in c['seeds'])}: "
            f"{', '.join(f'{100 * v:.2f}%' for v in c['today'])} against the record's {', '.join(f'{100 * v:.2f}%' for v in c['recorded'])} ({same} to the stored digit), "
            f"so this host and today's code train as the record's did. Source: docs/results/{SOURCES[b].file}, arm {SOURCES[b].key}={SOURCES[b].value}."
        )
        lines.append("")
    for b, a in analyses.items():
        lines += [f"### {b}", "", "| search seed | winner | MACs | winner (kd) test % | uniform (kd) test % | uniform (ce) test % |", "|---|---|---|---|---|---|"]
        for p in a["per_search"]:
            name = "the uniform baseline" if p["is_baseline"] else f"`{p['winner']}`"
            lines.append(f"| {p['search_seed']} | {name} | {p['winner_macs'] / 1e6:.2f}M | {100 * p['winner_test']:.2f} | {100 * p['uniform_kd_test']:.2f} | {100 * p['uniform_ce_test']:.2f} |")
        lines.append("")
    lines.append("Per-seed ce rows: `docs/results/search_vs_ce.json`.")
    return "\n".join(lines)


def _train_uniform(budget: str, mode_name: str, seeds: list[int], log=print) -> tuple[str, dict[int, float]]:
    """The budget's uniform baseline trained as the quick search's final retrain trains it."""
    import torch

    from nas_kd.data import load_splits
    from nas_kd.distill.modes import get_mode
    from nas_kd.finalize import _teacher_pass, _train
    from nas_kd.models.teachers import resolve_teacher
    from nas_kd.plan import build_plan
    from nas_kd.search import SearchOptions

    plan = build_plan(SearchOptions(budget=budget, dataset="fashion-mnist", mode="kd", preset="quick", seed=0, progress=False, study=f"bench-vs-ce_{budget}"))
    device = torch.device("cpu")
    teacher, meta, path = resolve_teacher(plan.teacher.spec, plan.dataset, plan.preset.teacher, preset=plan.preset.name, seed=plan.seeds.split, device=device, data_dir=plan.data_dir, reconstruction=plan.teacher.reconstruction, log=log)
    plan = plan.with_teacher(meta, path)
    splits = load_splits(plan.dataset, plan.data_dir, seed=plan.seeds.split, train_subset=plan.full.train_subset)
    uniform = plan.space.baseline(plan.budget, plan.input_shape, plan.num_classes)
    mode = plan.mode if mode_name == plan.mode_name else get_mode(mode_name)
    shared = _teacher_pass(teacher, splits, plan.full, mode, device)
    out = {}
    for seed in seeds:
        start = time.perf_counter()
        m, _ = _train(uniform.to_json(), mode, seed, plan, teacher if mode.uses_teacher else None, splits, device, evaluate_test=True, shared=shared, show_progress=False)
        out[seed] = m["test_accuracy"]
        log(f"search-vs-ce: {budget} uniform {mode_name} seed {seed}: test {out[seed]:.4f} ({time.perf_counter() - start:.0f} s)")
    return uniform.describe(), out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", default="2M", choices=list(SOURCES))
    ap.add_argument("--check-seeds", default="1", help="retrain seeds on which the uniform baseline is trained again in kd and compared with the record (default 1)")
    ap.add_argument("--allow-mismatch", action="store_true", help="keep going when the check differs from the record (the rows then pair across code or numerics)")
    ap.add_argument("--render", action="store_true", help="rewrite the section from the JSON; train nothing")
    args = ap.parse_args(argv)
    record = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"commands": [], "dates": [], "hardware": hardware(), "budgets": {}}
    if not args.render:
        rows = shipped_rows(args.budget)
        kd = recorded_kd(rows)
        check_seeds = [int(s) for s in args.check_seeds.split(",") if s]
        uniform, today = _train_uniform(args.budget, "kd", check_seeds)
        if uniform != rows[0]["baseline"]["describe"]:
            raise SystemExit(f"the uniform baseline today is {uniform}, the record's {rows[0]['baseline']['describe']}: the space or budget changed")
        recorded = [kd[s] for s in check_seeds]
        match = [round(today[s], 4) for s in check_seeds] == [round(v, 4) for v in recorded]
        if not match and not args.allow_mismatch:
            raise SystemExit(f"the uniform baseline in kd trains to {[today[s] for s in check_seeds]} here, the record holds {recorded}: pass --allow-mismatch to pair them anyway")
        # Only the seeds no search trained in ce and no earlier run of this bench did.
        earlier = {int(s): v for s, v in (record["budgets"].get(args.budget) or {}).get("ce_by_seed", {}).items()}
        have = ce_runs(rows, earlier)
        _, ce = _train_uniform(args.budget, "ce", sorted(set(kd) - set(have)))
        record["budgets"][args.budget] = {"uniform": uniform, "ce_by_seed": {str(s): v for s, v in sorted({**earlier, **ce}.items())}, "check": {"seeds": check_seeds, "today": [today[s] for s in check_seeds], "recorded": recorded, "match": match}}
        command = shlex.join(["python", "-m", "bench.search_vs_ce", *(sys.argv[1:] if argv is None else argv)])
        record["commands"] = [c for c in record["commands"] if c != command] + [command]
        record["dates"] = sorted({*record["dates"], dt.date.today().isoformat()})
        record["hardware"] = hardware()
        RESULTS.write_text(json.dumps(record, indent=1) + "\n")
    text = render(record)
    write_section(SECTION, text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
