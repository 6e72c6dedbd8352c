"""Which full schedule should the quick preset retrain with? Variants at equal steps, paired by student and seed.

The quick preset's *full* schedule trains the re-screen's contenders and the final retrain (winner
and baselines): on a 2-core CPU it is 2 epochs on a 24,000-image subset of the 54,000 training
images. A variant ``EPOCHSxSUBSET`` changes only the epochs and the subset (``EPOCHSxSUBSET@LR`` also the
peak learning rate); batch, lr and the warm-up's number of steps stay the preset's, so ``1x48000`` takes exactly as many steps as
``2x24000`` and sees each image once instead of twice. Each variant trains the same students on
the same seeds (mode kd, the shipped teacher; its outputs cached once per variant, as a search
does), and the bench reports per variant the mean validation and test accuracy and the spread
over seeds, and each variant minus the first, paired by (student, seed), with a 95% t-interval.
Validation decides; test is printed beside it.

Students: the uniform baseline for ``--budget`` (the largest uniform member within it, as
`make search` picks it) and ``--students - 1`` random members of the space filling at least 85%
of the budget (what a search trains), drawn with ``--student-seed``.

    python -m bench.full_schedule --variants 2x24000,1x48000 --students 3 --seeds 1,2,3,4,5   # ~25 min, 2-core CPU
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import random
import re
import shlex
import statistics
import sys
from pathlib import Path

from bench._report import hardware, write_section
from bench._teacher_pass import TeacherPass
from bench.search_gpu import _diff
from bench.search_trials import check_host
from nas_kd.config import Schedule, get_preset, parse_budget
from nas_kd.cost import analytic_macs
from nas_kd.data import dataset_info, load_splits
from nas_kd.device import resolve_device, torch_threads
from nas_kd.errors import UserError
from nas_kd.files import digest
from nas_kd.models.student import StudentConfig
from nas_kd.models.teachers import resolve_teacher
from nas_kd.space import SearchSpace
from nas_kd.stats import paired_difference
from nas_kd.study import write_json

__all__ = ["main", "variant_schedule", "pick", "analyse", "render"]

RESULTS = Path(__file__).resolve().parent.parent / "docs" / "results" / "full_schedule.json"
MIN_FILL = 0.85  # as `nas-kd search --min-fill`'s default
_VARIANT = re.compile(r"^(\d+)x(\d+)(?:@([0-9.]+))?$")


def variant_schedule(base: Schedule, text: str) -> Schedule:
    """``base`` with ``EPOCHSxSUBSET[@LR]``'s epochs, subset and peak learning rate, and as many
    warm-up steps as ``base``."""
    found = _VARIANT.match(text)
    lr = _positive(found.group(3)) if found and found.group(3) else base.lr if found else None
    if not found or int(found.group(1)) < 1 or int(found.group(2)) < base.batch_size or lr is None:
        raise ValueError(f"variant '{text}': write EPOCHSxSUBSET or EPOCHSxSUBSET@LR, e.g. 1x48000 or 2x24000@0.05 (at least 1 epoch, a subset of at least one batch, a positive lr)")
    epochs, subset = int(found.group(1)), int(found.group(2))
    warmup_steps = base.warmup_epochs * (base.train_subset or subset) / base.batch_size
    return dataclasses.replace(base, epochs=epochs, train_subset=subset, lr=lr, warmup_epochs=round(warmup_steps * base.batch_size / subset, 6))


def _positive(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value > 0 else None


def pick(space: SearchSpace, budget, input_shape, num_classes: int, count: int, seed: int) -> list[tuple[str, StudentConfig]]:
    """The uniform baseline, then ``count - 1`` distinct random members filling the budget's MACs to at least `MIN_FILL`."""
    baseline = space.baseline(budget, input_shape, num_classes)
    out, seen, rng = [("baseline", baseline)], {baseline.to_json()}, random.Random(seed)
    for _ in range(200_000):
        if len(out) >= count:
            break
        cfg = space.random_config(rng)
        macs = analytic_macs(cfg, input_shape, num_classes)
        if MIN_FILL * budget.macs <= macs <= budget.macs and cfg.to_json() not in seen:
            seen.add(cfg.to_json())
            out.append((f"random {len(out)}", cfg))
    return out


def analyse(rows: list[dict], variants: list[str]) -> dict:
    """Per variant: mean val/test, mean within-student std over seeds; each later variant minus the
    first, paired by (student, seed), on validation and on test."""
    def by(variant: str, key: str) -> dict:
        return {(r["student"], r["seed"]): r[key] for r in rows if r["variant"] == variant}

    out: dict = {"per_variant": {}, "versus": {}}
    for v in variants:
        mine = [r for r in rows if r["variant"] == v]
        if not mine:
            continue
        spreads = [statistics.stdev([r["test_acc"] for r in mine if r["student"] == s]) for s in sorted({r["student"] for r in mine}) if sum(r["student"] == s for r in mine) > 1]
        out["per_variant"][v] = {
            "runs": len(mine),
            "val": statistics.fmean(r["val_acc"] for r in mine),
            "test": statistics.fmean(r["test_acc"] for r in mine),
            "test_std_over_seeds": statistics.fmean(spreads) if spreads else None,
            "train_seconds": statistics.median(r["train_seconds"] for r in mine),
        }
    ref = variants[0]
    for v in variants[1:]:
        entry = {}
        for key in ("val_acc", "test_acc"):
            a, b = by(v, key), by(ref, key)
            if len(set(a) & set(b)) >= 2:  # in fractions, as `_diff` prints them
                entry[key] = dataclasses.asdict(paired_difference({k: x / 100 for k, x in a.items()}, {k: x / 100 for k, x in b.items()}))
        out["versus"][v] = entry
    return out


def against_baseline(rows: list[dict], student: str, variant: str, mean_only: bool = False) -> dict | None:
    """``student`` minus the uniform baseline under ``variant``, paired by seed, on val and test
    (fractions, as `_diff` prints them); with ``mean_only`` just the mean differences."""
    if student == "baseline":
        return None
    out = {}
    for key in ("val_acc", "test_acc"):
        mine = {r["seed"]: r[key] / 100 for r in rows if r["variant"] == variant and r["student"] == student}
        base = {r["seed"]: r[key] / 100 for r in rows if r["variant"] == variant and r["student"] == "baseline"}
        if not set(mine) & set(base):
            return None
        diff = paired_difference(mine, base)
        out[key] = diff.mean if mean_only else dataclasses.asdict(diff)
    return out


def members_by_seed(rows: list[dict], variant: str, key: str) -> dict:
    """Per seed that every student ran, the random members' mean minus the baseline's run on that seed, paired over seeds.
    Every member is compared with the same baseline runs, so `_over_students`' interval leaves
    their noise out; this one keeps it (one pair per seed, few pairs: wide)."""
    mine = [r for r in rows if r["variant"] == variant]
    names = {r["student"] for r in mine}
    # The seeds every student ran: the members' mean is then over the same students on each.
    seeds = sorted(s for s in {r["seed"] for r in mine} if {r["student"] for r in mine if r["seed"] == s} == names)
    members = {s: [r[key] / 100 for r in mine if r["seed"] == s and r["student"] != "baseline"] for s in seeds}
    base = {r["seed"]: r[key] / 100 for r in mine if r["student"] == "baseline"}
    return dataclasses.asdict(paired_difference({s: statistics.fmean(m) for s, m in members.items() if m}, {s: base[s] for s in seeds if members[s]}))


def _over_students(means: list[dict], key: str) -> dict:
    """One difference per student (its mean over seeds), as a paired difference against zero."""
    return dataclasses.asdict(paired_difference(dict(enumerate(m[key] for m in means)), dict.fromkeys(range(len(means)), 0.0)))


def render(record: dict) -> str:
    variants = record["variants"]
    a = analyse(record["rows"], variants)
    lines = [
        f"## Which full schedule should the quick preset retrain with? (CPU, {record['budget']})",
        "",
        f"{' then '.join(f'`{c}`' for c in record['commands'])} ({', '.join(record['dates'])}; {record['hardware']}). Mode kd, the shipped teacher (outputs cached once per variant), batch {record['batch_size']}, lr {record['lr']} unless the variant names another (`@lr`), the same warm-up steps in every variant; students: the uniform baseline at {record['budget']} and random members filling at least {int(100 * MIN_FILL)}% of it; seeds {', '.join(map(str, record['seeds']))}. The re-screen and the final retrain of `make search` use this schedule; the first variant is the quick preset's.",
        "",
        "| variant (epochs x images) | runs | val % | test % | test std over seeds (mean over students) | median train s | minus the first, val, points [95% CI] | minus the first, test |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for v, c in a["per_variant"].items():
        versus = a["versus"].get(v, {})
        std = f"{c['test_std_over_seeds']:.2f}" if c["test_std_over_seeds"] is not None else "-"
        lines.append(
            f"| {v} | {c['runs']} | {c['val']:.2f} | {c['test']:.2f} | {std} | {c['train_seconds']:.0f} | "
            + (f"{_diff(versus['val_acc'])} | {_diff(versus['test_acc'])} |" if "val_acc" in versus else "(reference) | |")
        )
    ref = variants[0]
    lines += ["", "| student | MACs | " + " | ".join(f"{v} test % (val %)" for v in variants) + f" | minus the baseline ({ref}), val, paired by seed | minus the baseline, test |", "|---|---|" + "---|" * (len(variants) + 2)]
    for name, info in record["students"].items():
        cells = []
        for v in variants:
            mine = [r for r in record["rows"] if r["variant"] == v and r["student"] == name]
            cells.append(f"{statistics.fmean(r['test_acc'] for r in mine):.2f} ({statistics.fmean(r['val_acc'] for r in mine):.2f})" if mine else "-")
        versus = against_baseline(record["rows"], name, ref)
        cells += [_diff(versus["val_acc"]), _diff(versus["test_acc"])] if versus else ["", ""]
        lines.append(f"| {name}: `{info['describe']}` | {info['macs'] / 1e6:.2f}M | " + " | ".join(cells) + " |")
    random_members = [against_baseline(record["rows"], name, ref, mean_only=True) for name in record["students"] if name != "baseline"]
    random_members = [m for m in random_members if m]
    if len(random_members) >= 2:
        lines += ["", f"**A random member filling the budget against the uniform baseline** ({ref}, each student's mean paired difference over its seeds, then over the {len(random_members)} students): val {_diff(_over_students(random_members, 'val_acc'))}, test {_diff(_over_students(random_members, 'test_acc'))} points. That interval takes the baseline's runs as fixed (every member is compared with the same ones); per seed instead, the members' mean minus the baseline's run on it: val {_diff(members_by_seed(record['rows'], ref, 'val_acc'))}, test {_diff(members_by_seed(record['rows'], ref, 'test_acc'))} points."]
    if record.get("note"):
        lines += ["", f"**Note.** {record['note']}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", default="2x24000,1x48000", help="EPOCHSxSUBSET, comma-separated; the first is the reference")
    ap.add_argument("--students", type=int, default=3, help="the uniform baseline and this many minus one random members")
    ap.add_argument("--student-seed", type=int, default=0)
    ap.add_argument("--seeds", default="1,2,3,4,5")
    ap.add_argument("--budget", default="2M")
    ap.add_argument("--space", default="search_spaces/mbv2.yaml")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--results", default=str(RESULTS))
    ap.add_argument("--render", action="store_true", help="rewrite the section from the JSON; train nothing")
    ap.add_argument("--other-host", action="store_true", help="extend a record measured with other CPU numerics (refused otherwise)")
    args = ap.parse_args(argv)
    results = Path(args.results)
    base = get_preset("quick").full
    try:
        variants = {v: variant_schedule(base, v) for v in args.variants.split(",")}
        seeds = [int(s) for s in args.seeds.split(",")]
        budget = parse_budget(args.budget)
    except (ValueError, UserError) as e:
        print(f"full_schedule: {e}", file=sys.stderr)
        return 2
    if not args.render:
        command = shlex.join(["python", "-m", "bench.full_schedule", *(sys.argv[1:] if argv is None else argv)])
        record = json.loads(results.read_text()) if results.is_file() else {"commands": [], "dates": [], "hardware": hardware(), "budget": args.budget, "batch_size": base.batch_size, "lr": base.lr, "variants": [], "seeds": [], "students": {}, "rows": []}
        if not check_host(record, record, "full_schedule", args.other_host):
            return 2
        if record["budget"] != args.budget:
            print(f"full_schedule: {results.name} holds runs at {record['budget']}: they would not pair with these; move the file away", file=sys.stderr)
            return 2
        info = dataset_info("fashion-mnist", args.data_dir)
        students = pick(SearchSpace.load(args.space), budget, info.input_shape, info.num_classes, args.students, args.student_seed)
        for name, cfg in students:
            known = record["students"].setdefault(name, {"describe": cfg.describe(), "config": cfg.to_json(), "macs": analytic_macs(cfg, info.input_shape, info.num_classes)})
            if known["config"] != cfg.to_json():
                print(f"full_schedule: student '{name}' was {known['describe']} in {results.name}: use the same --student-seed and space, or move the file away", file=sys.stderr)
                return 2
        record["commands"].append(command)
        record["variants"] += [v for v in variants if v not in record["variants"]]
        record["seeds"] += [s for s in seeds if s not in record["seeds"]]
        if dt.date.today().isoformat() not in record["dates"]:
            record["dates"].append(dt.date.today().isoformat())
        device = resolve_device("cpu")
        with torch_threads(args.threads):
            teacher, _, tpath = resolve_teacher("default", "fashion-mnist", get_preset("standard").teacher, preset="standard", seed=0, device=device, data_dir=args.data_dir, reconstruction=True)
            sha = digest(tpath)
            for v, schedule in variants.items():
                splits = load_splits("fashion-mnist", args.data_dir, seed=0, train_subset=schedule.train_subset)
                teacher_pass = TeacherPass(teacher, splits, schedule.batch_size, device, planned=["kd"])
                for seed in seeds:  # seed-major: a run cut short stays paired across students
                    for name, cfg in students:
                        if any((r["variant"], r["student"], r["seed"]) == (v, name, seed) for r in record["rows"]):
                            continue
                        m = teacher_pass.train(cfg, schedule, "kd", seed, evaluate_test=True)
                        record["rows"].append({"variant": v, "student": name, "seed": seed, "schedule": schedule.to_dict(), "teacher_sha256": sha, "val_acc": 100 * m["val_accuracy"], "test_acc": 100 * m["test_accuracy"], "train_seconds": m["train_seconds"]})
                        write_json(results, record)
                        print(f"{v:>9s} {name:9s} seed {seed}: val {100 * m['val_accuracy']:.2f}%  test {100 * m['test_accuracy']:.2f}%  {m['train_seconds']:.0f} s", flush=True)
    record = json.loads(results.read_text())
    body = render(record)
    write_section("full-schedule", body)
    print(body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
