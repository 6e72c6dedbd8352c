"""Which brief schedule ranks a search's candidates best? Brief variants scored against the full schedule, on the same students.

A quick search ranks each candidate by one *brief* run (2 epochs on 4,000 images: 62 steps),
re-screens the brief top 3 and the uniform baseline with one full-schedule run, and ships the best.
At 2M its winner was no better than a random member of the budget band (docs/BENCHMARKS.md,
full-schedule and search-prune sections), and the brief run is the first suspect. This bench trains
the students of `bench.full_schedule` (the uniform baseline, then random members filling at least
85% of the budget, the same ``--student-seed``) under brief variants ``EPOCHSxSUBSET[@LR]`` (the
quick brief schedule's batch, lr and number of warm-up steps, other epochs and subset) on the
search seeds, and scores each variant against what it should predict: those students' mean
full-schedule accuracy over the seeds in docs/results/full_schedule.json (run that bench with the
same ``--students`` first). Per variant:

- Spearman's rank correlation between the brief validation accuracy and the full schedule's mean
  validation accuracy, per brief seed, with a bootstrap interval over students (and the
  difference from the first variant on the same resamples). One full-schedule run against the mean
  of the other seeds' runs is printed beside it: the re-screen's own fidelity.
- A search replayed: pools of the baseline and 7 other students (what an 8-trial quick search with
  10 random start-up draws trains, the baseline first), ranked by the variant's brief score; the
  top 3 (and other widths) and the baseline "re-screened" by one truth seed's full-schedule
  validation accuracy, each truth seed in turn; the winner judged by its mean validation (and
  test) accuracy over the other truth seeds (never the run it was chosen on), minus the
  baseline's. Beside it: the brief ranking alone, a random member, the pool's best; bootstrap
  intervals over students for the differences between variants and between picking rules.

    python -m bench.full_schedule --variants 2x24000 --students 25 --seeds 1,2,3      # the truth, ~45 min
    python -m bench.brief_schedule --variants 2x4000,2x8000,2x16000 --students 25     # ~20 min, 2-core CPU
"""

from __future__ import annotations

import argparse
import json
import random
import shlex
import statistics
import sys
from pathlib import Path

from bench._report import hardware, write_section
from bench._teacher_pass import TeacherPass
from bench.full_schedule import RESULTS as REFERENCE
from bench.full_schedule import pick, variant_schedule
from bench.search_trials import open_record
from nas_kd.config import get_preset, parse_budget
from nas_kd.cost import analytic_macs
from nas_kd.data import dataset_info, load_splits
from nas_kd.device import resolve_device, torch_threads
from nas_kd.errors import UserError
from nas_kd.files import digest
from nas_kd.models.teachers import resolve_teacher
from nas_kd.space import SearchSpace
from nas_kd.stats import percentile, spearman
from nas_kd.study import write_json

__all__ = ["main", "truth", "replay", "analyse", "render"]

RESULTS = Path(__file__).resolve().parent.parent / "docs" / "results" / "brief_schedule.json"
FULL_VARIANT = "2x24000"  # the quick preset's full schedule, as bench.full_schedule names it
POOL, TOP = 8, 3  # `make search`'s trials and --rescreen
WIDTHS = (1, 2, 3, 4, 5, 7)  # re-screen widths replayed (7: every candidate)
SPLITS = {"val": 0, "test": 1}  # what judges a replayed pick: validation decides, test is printed beside it


def truth(reference: dict, names: list[str], seeds: list[int]) -> dict[str, dict[int, tuple[float, float]]]:
    """Per student and truth seed, the full-schedule (validation, test) accuracy in ``reference``
    (bench.full_schedule's record). UserError naming what is missing and the command that makes it."""
    out: dict[str, dict[int, tuple[float, float]]] = {n: {} for n in names}
    for r in reference.get("rows", []):
        if r["variant"] == FULL_VARIANT and r["student"] in out and r["seed"] in seeds:
            out[r["student"]][r["seed"]] = (r["val_acc"], r["test_acc"])
    missing = [n for n in names if len(out[n]) < len(seeds)]
    if missing:
        raise UserError(
            f"{len(missing)} of {len(names)} students lack a full-schedule run on seeds {','.join(map(str, seeds))} (first: '{missing[0]}'): "
            f"run python -m bench.full_schedule --variants {FULL_VARIANT} --students {len(names)} --seeds {','.join(map(str, seeds))} first"
        )
    return out


def replay(brief: list[float], rescreen: list[float], judge: list[float], rng: random.Random, pools: int, widths=WIDTHS) -> dict:
    """Mean over ``pools`` replayed searches of (judged accuracy of the pick) minus the baseline's,
    per way of picking. Student 0 is the baseline and is in every pool with `POOL` - 1 of the others;
    *rescreen* ``{k: gain}``: the brief top k and the baseline, the best ``rescreen`` score wins;
    *brief*: the best brief score alone; *random*: a pool member at random; *best*: the best judged."""
    others = range(1, len(brief))
    gains = {"brief": 0.0, "random": 0.0, "best": 0.0}
    by_width = dict.fromkeys(widths, 0.0)
    for _ in range(pools):
        pool = [0, *rng.sample(others, POOL - 1)]
        order = sorted(pool, key=lambda i: -brief[i])
        base = judge[0]
        for k in widths:
            contenders = order[:k] + ([] if 0 in order[:k] else [0])
            by_width[k] += judge[max(contenders, key=lambda i: rescreen[i])] - base
        gains["brief"] += judge[order[0]] - base
        gains["random"] += statistics.fmean(judge[i] for i in pool) - base
        gains["best"] += max(judge[i] for i in pool) - base
    return {**{k: v / pools for k, v in gains.items()}, "rescreen": {k: v / pools for k, v in by_width.items()}}


def _brief_scores(rows: list[dict], variant: str, names: list[str]) -> dict[int, list[float]]:
    """Brief validation accuracy per seed that every student has, in ``names`` order."""
    by = {(r["student"], r["seed"]): r["val_acc"] for r in rows if r["variant"] == variant}
    seeds = sorted({s for _, s in by})
    return {s: [by[(n, s)] for n in names] for s in seeds if all((n, s) in by for n in names)}


def _mean_rho(scores: dict[int, list[float]], target: list[float], idx: list[int]) -> float:
    return statistics.fmean(spearman([v[i] for i in idx], [target[i] for i in idx]) for v in scores.values())


def _replays(scores: dict[int, list[float]], full: list[dict[int, tuple[float, float]]], truth_seeds: list[int], idx: list[int], pools: int, judged: int, widths=WIDTHS) -> dict:
    """`replay` averaged over brief seeds and over rotations of the truth seeds (each one in turn
    re-screens by its validation accuracy, the others judge by their validation (``judged`` 0) or
    test (1) accuracy), on the students ``idx`` (index 0: the baseline)."""
    runs = []
    for b, brief in scores.items():
        for r in truth_seeds:
            rescreen = [full[i][r][0] for i in idx]
            judge = [statistics.fmean(full[i][o][judged] for o in truth_seeds if o != r) for i in idx]
            runs.append(replay([brief[i] for i in idx], rescreen, judge, random.Random(1000 * b + r), pools, widths))
    out = {k: statistics.fmean(x[k] for x in runs) for k in ("brief", "random", "best")}
    out["rescreen"] = {k: statistics.fmean(x["rescreen"][k] for x in runs) for k in widths}
    return out


def _interval(values: list[float]) -> list[float]:
    return [percentile(values, 0.025), percentile(values, 0.975)]


def _averaged(scores: dict[int, list[float]], full: list, val: list[float], truth_seeds: list[int], everyone: list[int], boot: list, rho_boot: list[float], replay_boot: list, boot_gain: dict, single: dict, pools: int) -> dict:
    """The same variant scored by the mean of its brief seeds' runs (twice the brief cost for two
    seeds) against one seed's run: rho, the replayed search, and the differences with bootstrap
    intervals over the same resampled students as the one-seed figures."""
    averaged = {-1: [statistics.fmean(x[i] for x in scores.values()) for i in everyone]}
    rho_avg = [_mean_rho(averaged, val, idx) for idx in boot]
    out = {"rho": _mean_rho(averaged, val, everyone), "rho_minus_one_seed": [_mean_rho(averaged, val, everyone) - _mean_rho(scores, val, everyone), *_interval([a - b for a, b in zip(rho_avg, rho_boot, strict=True)])], "replay": {}, "minus_one_seed": {}}
    for split, judged in SPLITS.items():
        replayed = out["replay"][split] = _replays(averaged, full, truth_seeds, everyone, pools, judged)
        boot_avg = [_replays(averaged, full, truth_seeds, idx, max(1, pools // 10), judged, widths=(TOP,)) for idx in replay_boot]
        out["minus_one_seed"][split] = {
            way: [pick(replayed) - pick(single[split]), *_interval([pick(a) - pick(b) for a, b in zip(boot_avg, boot_gain[split], strict=True)])]
            for way, pick in (("brief", lambda r: r["brief"]), ("rescreen", lambda r: r["rescreen"][TOP]))
        }
    return out


def analyse(record: dict, reference: dict, truth_seeds: list[int], pools: int = 1000, resamples: int = 1000, replay_resamples: int = 200) -> dict:
    """Spearman per variant and brief seed, the replayed search, bootstrap intervals over students
    (module docstring). Deterministic: every random draw comes from fixed seeds."""
    names = list(record["students"])
    if names[0] != "baseline":
        raise ValueError("the first student must be the uniform baseline")
    truth_by_name = truth(reference, names, truth_seeds)
    full = [truth_by_name[n] for n in names]
    val = [statistics.fmean(v for v, _ in f.values()) for f in full]
    # One full-schedule run against the mean of the others: the re-screen's fidelity.
    single = [spearman([f[s][0] for f in full], [statistics.fmean(f[o][0] for o in truth_seeds if o != s) for f in full]) for s in truth_seeds]
    variants = [v for v in record["variants"] if _brief_scores(record["rows"], v, names)]
    scores = {v: _brief_scores(record["rows"], v, names) for v in variants}
    rng = random.Random(0)
    everyone = list(range(len(names)))
    boot = [[rng.randrange(len(names)) for _ in names] for _ in range(resamples)]
    # The replay's resamples keep the baseline (every pool holds it) and resample the others.
    replay_boot = [[0, *(rng.randrange(1, len(names)) for _ in names[1:])] for _ in range(replay_resamples)]
    out: dict = {"students": len(names), "truth_seeds": truth_seeds, "full_single_run_rho": statistics.fmean(single), "per_variant": {}}
    out["full_seconds"] = statistics.median(r.get("train_seconds", 0.0) for r in reference["rows"] if r["variant"] == FULL_VARIANT and r["student"] in truth_by_name)
    ref = variants[0] if variants else None
    boot_gain: dict[str, dict[str, list[dict]]] = {}
    rho_boot: dict[str, list[float]] = {}
    for v in variants:
        rho_boot[v] = [_mean_rho(scores[v], val, idx) for idx in boot]
        entry = {
            "brief_seeds": sorted(scores[v]),
            "rho_per_seed": {str(s): spearman(x, val) for s, x in scores[v].items()},
            "rho": _mean_rho(scores[v], val, everyone),
            "rho_interval": _interval(rho_boot[v]),
            "brief_val": statistics.fmean(statistics.fmean(x) for x in scores[v].values()),
            "train_seconds": statistics.median(r["train_seconds"] for r in record["rows"] if r["variant"] == v),
            "steps": next(r["steps"] for r in record["rows"] if r["variant"] == v),
            "replay": {split: _replays(scores[v], full, truth_seeds, everyone, pools, judged) for split, judged in SPLITS.items()},
        }
        boot_gain[v] = {split: [_replays(scores[v], full, truth_seeds, idx, max(1, pools // 10), judged, widths=(TOP,)) for idx in replay_boot] for split, judged in SPLITS.items()}
        for split in SPLITS:
            # The brief top 1 alone against the re-screen of the top 3 (both with this brief variant).
            replayed, boot_v = entry["replay"][split], boot_gain[v][split]
            entry.setdefault("brief_minus_rescreen", {})[split] = [replayed["brief"] - replayed["rescreen"][TOP], *_interval([g["brief"] - g["rescreen"][TOP] for g in boot_v])]
            if v != ref:
                first = out["per_variant"][ref]["replay"][split]["rescreen"][TOP]
                boot_ref = boot_gain[ref][split]
                entry.setdefault("rescreen_minus_first", {})[split] = [replayed["rescreen"][TOP] - first, *_interval([a["rescreen"][TOP] - b["rescreen"][TOP] for a, b in zip(boot_v, boot_ref, strict=True)])]
        if len(scores[v]) > 1:
            entry["averaged"] = _averaged(scores[v], full, val, truth_seeds, everyone, boot, rho_boot[v], replay_boot, boot_gain[v], entry["replay"], pools)
        if v != ref:
            entry["rho_minus_first"] = entry["rho"] - out["per_variant"][ref]["rho"]
            entry["rho_minus_first_interval"] = _interval([a - b for a, b in zip(rho_boot[v], rho_boot[ref], strict=True)])
        out["per_variant"][v] = entry
    out["truth"] = {n: {"val": val[i], "test": statistics.fmean(t for _, t in full[i].values())} for i, n in enumerate(names)}
    return out


def _ci(triple: list[float]) -> str:
    """(value, low, high) as "+v [+l, +h]"."""
    return f"{triple[0]:+.2f} [{triple[1]:+.2f}, {triple[2]:+.2f}]"


def render(record: dict, reference: dict) -> str:
    truth_seeds = record["truth_seeds"]
    a = analyse(record, reference, truth_seeds)
    names = list(record["students"])
    pv = a["per_variant"]
    lines = [
        f"## Which brief schedule ranks candidates best? (CPU, {record['budget']})",
        "",
        f"{' then '.join(f'`{c}`' for c in record['commands'])} ({', '.join(record['dates'])}; {record['hardware']}). Mode kd, the shipped teacher (outputs cached once per variant); "
        f"{a['students']} students: the uniform baseline at {record['budget']} and random members filling at least 85% of it (bench.full_schedule's, same student seed). "
        f"Brief variants `EPOCHSxSUBSET[@LR]`: the quick preset's brief schedule (2x4000, batch 128, lr 0.1) with other epochs and subset, the same warm-up steps; brief seeds = search seeds. "
        f"Truth: each student's full-schedule ({FULL_VARIANT}) runs on seeds {', '.join(map(str, truth_seeds))} (`docs/results/full_schedule.json`).",
        "",
        f"*rho*: Spearman between a brief run's validation accuracy and the full schedule's mean validation accuracy over the {a['students']} students (mean over brief seeds). "
        f"*Replayed search*: pools of the baseline and {POOL - 1} other students (an 8-trial quick search's random start-up draws), the brief top {TOP} and the baseline re-screened by one full-schedule run's validation accuracy, "
        f"the winner judged by its mean validation (and test) accuracy over the other truth seeds' runs, minus the baseline's (points; mean over pools, brief seeds and the {len(truth_seeds)} choices of the re-screening seed). "
        "Brackets: 95% bootstrap intervals over students (the replay keeps the baseline and resamples the others). Validation decides; test is printed beside it.",
        "",
        "| brief variant | steps | median s per run | rho per brief seed | rho [95% CI] | rho minus the first |",
        "|---|---|---|---|---|---|",
    ]
    for v, e in pv.items():
        seeds = ", ".join(f"{e['rho_per_seed'][str(s)]:.2f}" for s in e["brief_seeds"])
        rho_first = _ci([e["rho_minus_first"], *e["rho_minus_first_interval"]]) if "rho_minus_first" in e else "(reference)"
        lo, hi = e["rho_interval"]
        lines.append(f"| {v} | {e['steps']} | {e['train_seconds']:.1f} | {seeds} | {e['rho']:.2f} [{lo:.2f}, {hi:.2f}] | {rho_first} |")
    if pv:
        r = next(iter(pv.values()))["replay"]
        lines += [
            "",
            f"One full-schedule run ranks the students with rho {a['full_single_run_rho']:.2f} against the mean of the other seeds' runs (the re-screen's fidelity; mean over the {len(truth_seeds)} seeds).",
            "",
            f"| brief variant | replayed search (top {TOP} re-screened): winner - baseline, val (test) | minus the first, val | minus the first, test | the brief top 1 alone, val (test) | alone minus re-screened, val | alone minus re-screened, test |",
            "|---|---|---|---|---|---|---|",
        ]
        for v, e in pv.items():
            rv, rt = e["replay"]["val"], e["replay"]["test"]
            first = [_ci(e["rescreen_minus_first"][k]) for k in SPLITS] if "rescreen_minus_first" in e else ["(reference)", ""]
            lines.append(
                f"| {v} | {rv['rescreen'][TOP]:+.2f} ({rt['rescreen'][TOP]:+.2f}) | {first[0]} | {first[1]} | {rv['brief']:+.2f} ({rt['brief']:+.2f}) | {_ci(e['brief_minus_rescreen']['val'])} | {_ci(e['brief_minus_rescreen']['test'])} |"
            )
        lines += [
            "",
            f"In the same pools a random member scores {r['val']['random']:+.2f} ({r['test']['random']:+.2f}) points against the baseline and the pool's best {r['val']['best']:+.2f} ({r['test']['best']:+.2f}), val (test).",
            "",
            f"Re-screen width, replayed (winner - baseline, val (test), points; the baseline is re-screened too; each contender costs one full-schedule run, median {a['full_seconds']:.0f} s here):",
            "",
            "| brief variant | " + " | ".join(f"top {k}" for k in WIDTHS) + " |",
            "|---|" + "---|" * len(WIDTHS),
        ]
        lines += [f"| {v} | " + " | ".join(f"{e['replay']['val']['rescreen'][k]:+.2f} ({e['replay']['test']['rescreen'][k]:+.2f})" for k in WIDTHS) + " |" for v, e in pv.items()]
    averaged = {v: e["averaged"] for v, e in pv.items() if "averaged" in e}
    if averaged:
        lines += [
            "",
            "The same variants scored by the **mean of their brief seeds' runs** (twice the brief cost), minus one seed's run (val; test in parentheses for the picks):",
            "",
            f"| brief variant | rho, averaged | rho minus one seed | the brief top 1 alone, val (test) | alone: minus one seed, val | top {TOP} re-screened, val (test) | re-screened: minus one seed, val |",
            "|---|---|---|---|---|---|---|",
        ]
        for v, e in averaged.items():
            rv, rt, d = e["replay"]["val"], e["replay"]["test"], e["minus_one_seed"]["val"]
            lines.append(
                f"| {v} | {e['rho']:.2f} | {_ci(e['rho_minus_one_seed'])} | {rv['brief']:+.2f} ({rt['brief']:+.2f}) | {_ci(d['brief'])} | {rv['rescreen'][TOP]:+.2f} ({rt['rescreen'][TOP]:+.2f}) | {_ci(d['rescreen'])} |"
            )
    variants = list(pv)
    lines += ["", "| student | MACs | full val % (mean) | full test % (mean) | " + " | ".join(f"{v} val % (per seed)" for v in variants) + " |", "|---|---|---|---|" + "---|" * len(variants)]
    for n in names:
        t = a["truth"][n]
        cells = [" / ".join(f"{r['val_acc']:.1f}" for r in sorted((r for r in record["rows"] if r["variant"] == v and r["student"] == n), key=lambda r: r["seed"])) for v in variants]
        lines.append(f"| {n}: `{record['students'][n]['describe']}` | {record['students'][n]['macs'] / 1e6:.2f}M | {t['val']:.2f} | {t['test']:.2f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", default="2x4000,2x8000,2x16000", help="EPOCHSxSUBSET[@LR] of the quick brief schedule, comma-separated; the first is the reference")
    ap.add_argument("--students", type=int, default=25, help="the uniform baseline and this many minus one random members (bench.full_schedule's)")
    ap.add_argument("--student-seed", type=int, default=0)
    ap.add_argument("--seeds", default="0,4", help="brief seeds (a search's seed is its brief runs' seed; none of --truth-seeds: the same seed starts from the same weights)")
    ap.add_argument("--truth-seeds", default="1,2,3", help="full-schedule seeds in the reference: in turn, one re-screens the replayed searches and the others judge them")
    ap.add_argument("--budget", default="2M")
    ap.add_argument("--space", default="search_spaces/mbv2.yaml")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--results", default=str(RESULTS))
    ap.add_argument("--reference", default=str(REFERENCE), help="bench.full_schedule's record")
    ap.add_argument("--render", action="store_true", help="rewrite the section from the JSON; train nothing")
    ap.add_argument("--other-host", action="store_true", help="extend a record measured with other CPU numerics (refused otherwise)")
    args = ap.parse_args(argv)
    results, reference_path = Path(args.results), Path(args.reference)
    base = get_preset("quick").brief
    try:
        variants = {v: variant_schedule(base, v) for v in args.variants.split(",")}
        seeds = [int(s) for s in args.seeds.split(",")]
        truth_seeds = [int(s) for s in args.truth_seeds.split(",")]
        budget = parse_budget(args.budget)
        if len(truth_seeds) < 2 or len(set(truth_seeds)) < len(truth_seeds):
            raise UserError("--truth-seeds needs at least two distinct seeds: one re-screens, the others judge")
        if set(seeds) & set(truth_seeds):
            raise UserError(f"--seeds {args.seeds} and --truth-seeds {args.truth_seeds} overlap: a brief seed must not be one the truth is judged on")
        if not reference_path.is_file():
            raise UserError(f"no full-schedule record at {reference_path}: run python -m bench.full_schedule --variants {FULL_VARIANT} --students {args.students} --seeds {args.truth_seeds} first")
        reference = json.loads(reference_path.read_text())
    except (ValueError, UserError) as e:
        print(f"brief_schedule: {e}", file=sys.stderr)
        return 2
    if not args.render:
        info = dataset_info("fashion-mnist", args.data_dir)
        students = pick(SearchSpace.load(args.space), budget, info.input_shape, info.num_classes, args.students, args.student_seed)
        try:
            if reference.get("budget") != args.budget:
                raise UserError(f"{reference_path.name} is at budget {reference.get('budget')}, this run asks for {args.budget}")
            for name, cfg in students:
                if (reference.get("students", {}).get(name) or {}).get("config") != cfg.to_json():
                    raise UserError(f"student '{name}' ({cfg.describe()}) is not {reference_path.name}'s '{name}': use its --student-seed and space")
            truth(reference, [n for n, _ in students], truth_seeds)
        except UserError as e:
            print(f"brief_schedule: {e}", file=sys.stderr)
            return 2
        command = shlex.join(["python", "-m", "bench.brief_schedule", *(sys.argv[1:] if argv is None else argv)])
        fresh = {"commands": [], "dates": [], "hardware": hardware(), "budget": args.budget, "student_seed": args.student_seed, "truth_seeds": truth_seeds, "variants": [], "students": {}, "rows": []}
        record, old = open_record(results, fresh, "brief_schedule", ("budget", "student_seed", "truth_seeds"), args.other_host, command)
        if record is None:
            return 2
        record["variants"] = list(dict.fromkeys([*old.get("variants", []), *variants]))
        record["students"] = {**old.get("students", {}), **{n: {"describe": c.describe(), "config": c.to_json(), "macs": analytic_macs(c, info.input_shape, info.num_classes)} for n, c in students}}
        device = resolve_device("cpu")
        with torch_threads(args.threads):
            teacher, _, tpath = resolve_teacher("default", "fashion-mnist", get_preset("standard").teacher, preset="standard", seed=0, device=device, data_dir=args.data_dir, reconstruction=True)
            sha = digest(tpath)
            for v, schedule in variants.items():
                splits = load_splits("fashion-mnist", args.data_dir, seed=0, train_subset=schedule.train_subset)  # the search's split seed
                teacher_pass = TeacherPass(teacher, splits, schedule.batch_size, device, planned=["kd"])
                steps = schedule.epochs * (schedule.train_subset // schedule.batch_size)  # the loader drops the last partial batch
                for seed in seeds:
                    for name, cfg in students:
                        if any((r["variant"], r["student"], r["seed"]) == (v, name, seed) for r in record["rows"]):
                            continue
                        m = teacher_pass.train(cfg, schedule, "kd", seed, evaluate_test=False)
                        record["rows"].append({"variant": v, "student": name, "seed": seed, "schedule": schedule.to_dict(), "steps": steps, "teacher_sha256": sha, "val_acc": 100 * m["val_accuracy"], "train_seconds": m["train_seconds"]})
                        write_json(results, record)
                        print(f"{v:>9s} {name:10s} seed {seed}: val {100 * m['val_accuracy']:.2f}%  {m['train_seconds']:.1f} s", flush=True)
    if not results.is_file():
        print(f"brief_schedule: nothing to render: no record at {results}", file=sys.stderr)
        return 2
    record = json.loads(results.read_text())
    try:
        body = render(record, reference)
    except UserError as e:
        print(f"brief_schedule: {e}", file=sys.stderr)
        return 2
    write_section("brief-schedule", body)
    print(body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
