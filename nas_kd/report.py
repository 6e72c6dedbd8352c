"""The run report in ``runs/<study>/``: ``report.md``, ``report.json``, ``trials.csv``, ``pareto.png``.

Everything is read from the study (its stored configuration and trials) and, unless the report
is ``partial``, from the final retrain's ``final.json``. A partial report (an interrupted or
unfinished search) has the same files, with the winner's search figures but no test accuracy
and no baselines: the test split is only read by the final retrain.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

from nas_kd.config import format_count, format_quantity
from nas_kd.plan import describe_schedule_changes, plan_of
from nas_kd.stats import PairedDifference
from nas_kd.study import cut_short, is_feasible, run_dir, trial_counts, write_json
from nas_kd.verdict import chose_baseline

__all__ = ["trial_rows", "trial_state", "write_report", "plot_pareto", "build_report"]

CSV_FIELDS = ["number", "state", "baseline", "feasible", "val_accuracy", "macs", "params", "memory_bytes", "size_bytes", "predicted_latency_ms", "latency_ms", "latency_ruler_ms", "latency_rulers", "latency_slowest_ms", "train_seconds", "images_per_second", "step_graph", "duration_seconds", "fail_reason", "config"]


def trial_state(t) -> str:
    """Optuna's state name, except that a COMPLETE trial over budget is ``INFEASIBLE``."""
    return "INFEASIBLE" if t.state.name == "COMPLETE" and not is_feasible(t) else t.state.name


def trial_rows(study) -> list[dict]:
    """One flat record per trial (what ``trials.csv`` and ``report.json`` hold)."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        state = trial_state(t)
        acc = t.values[0] if state == "COMPLETE" and t.values else None
        if acc is None and state == "PRUNED" and t.intermediate_values:
            acc = t.intermediate_values[max(t.intermediate_values)]  # its last reported epoch
        a = t.user_attrs
        rows.append({
            "number": t.number,
            "state": state,
            "baseline": bool(a.get("baseline")),
            "feasible": a.get("feasible"),
            "val_accuracy": acc,
            "macs": a.get("macs"),
            "params": a.get("params"),
            "memory_bytes": a.get("memory_bytes"),  # at the budget's precision; recorded when limited
            "size_bytes": a.get("size_bytes"),
            "predicted_latency_ms": a.get("predicted_latency_ms"),
            "latency_ms": a.get("latency_ms"),  # measured (near the latency limit)
            "latency_ruler_ms": a.get("latency_ruler_ms"),  # the ruler's time right after (nas_kd.latency)
            "latency_rulers": a.get("latency_rulers"),  # the measurement in rulers
            "latency_slowest_ms": a.get("latency_slowest_ms"),  # in ms at the slowest speed seen: what the limit judged (nas_kd.meter)
            "train_seconds": a.get("train_seconds"),
            "images_per_second": a.get("images_per_second"),
            "step_graph": a.get("step_graph"),  # with --gpu-step graph=1: "captured", or eager and why
            "duration_seconds": t.duration.total_seconds() if t.duration else None,
            "fail_reason": a.get("fail_reason"),
            "config": a.get("describe"),
        })
    return rows


# Each budgeted quantity as a Pareto x-axis: (label, the row's value).
AXES = {
    "macs": ("MACs per image (fvcore)", lambda r: r["macs"]),
    "params": ("parameters", lambda r: r["params"]),
    "memory": ("peak activation memory (bytes)", lambda r: r["memory_bytes"]),
    "size": ("weight bytes", lambda r: r["size_bytes"]),
    "latency": ("latency per image (ms at the slowest speed seen; measured where it was, else predicted)", lambda r: next((v for v in (r.get("latency_slowest_ms"), r["latency_ms"], r["predicted_latency_ms"]) if v is not None), None)),
}


def plot_pareto(rows: list[dict], limit: float | None, winner: int | None, path: Path, title: str, x: str = "macs") -> Path:
    """Validation accuracy vs a budgeted quantity ``x`` (a key of `AXES`) for every costed trial:
    infeasible ones at the bottom as crosses, pruned ones hollow, the limit as a vertical line, the
    winner as a star."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    label, value = AXES[x]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    styles = {
        "COMPLETE": dict(marker="o", color="tab:blue", label="trained"),
        "PRUNED": dict(marker="o", facecolors="none", edgecolors="tab:gray", label="pruned (last epoch)"),
        "INFEASIBLE": dict(marker="x", color="tab:red", label="over budget (not trained)"),
    }
    for state, style in styles.items():
        pts = [(value(r), r["val_accuracy"] or 0.0) for r in rows if r["state"] == state and value(r) is not None]
        if pts:
            ax.scatter(*zip(*pts, strict=True), s=28, alpha=0.8, **style)
    if limit is not None:
        ax.axvline(limit, color="black", linestyle="--", linewidth=1, label=f"budget {format_quantity(x, limit)}")
    best = [r for r in rows if r["number"] == winner and value(r) is not None]
    if best:
        ax.scatter([value(best[0])], [best[0]["val_accuracy"]], marker="*", s=260, color="gold", edgecolors="black", zorder=5, label=f"winner (trial {winner})")
    ax.set_xscale("log")
    ax.set_xlabel(label)
    ax.set_ylabel("validation accuracy (brief schedule)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def _mean_std(s: dict) -> str:
    if s.get("test_std") is None:
        return f"{100 * s['test_mean']:.2f}% (one seed)"
    return f"{100 * s['test_mean']:.2f} ± {100 * s['test_std']:.2f}%"


def _interval(d: dict) -> str:
    if d["low"] is None:
        return "one seed: no interval"
    return f"{100 * d['low']:+.2f} to {100 * d['high']:+.2f}"


def machine_speed_note(trial_row: dict | None, footprint: dict) -> str | None:
    """Whether the machine or the student changed between a trial's latency measurement and the
    final one: the ruler (`nas_kd.latency`) was timed right after each."""
    then_ms, then_ruler = (trial_row or {}).get("latency_ms"), (trial_row or {}).get("latency_ruler_ms")
    now_ruler = (footprint.get("latency") or {}).get("ruler_ms")
    if not (then_ms and then_ruler and now_ruler):
        return None
    slower = now_ruler / then_ruler
    then_rulers, now_rulers = (trial_row or {}).get("latency_rulers"), (footprint.get("latency") or {}).get("rulers")
    # In rulers where both were timed alternately with the ruler; else the two timings' ratio.
    student = now_rulers / then_rulers if then_rulers and now_rulers else (footprint["latency_ms"] / now_ruler) / (then_ms / then_ruler)
    return (
        f"The ruler, a fixed block timed right after each measurement, took {then_ruler:.3f} ms in the search and {now_ruler:.3f} ms now: "
        f"the machine was {slower:.2f}x as slow, and the student, relative to the ruler, {student:.2f}x as slow as in the search."
    )


def build_report(study, final: dict | None, partial: bool) -> dict:
    """The content of ``report.json``."""
    from nas_kd.cost import thop_macs
    from nas_kd.finalize import pick_winner
    from nas_kd.models.student import StudentConfig
    from nas_kd.verdict import verdict_sentence

    plan = plan_of(study)
    trials = study.get_trials(deepcopy=False)
    rows = trial_rows(study)
    winner = pick_winner(study)
    counts = trial_counts(trials)
    report = {
        "study": study.study_name,
        "partial": partial,
        "budget": plan.budget.to_dict(),
        "space": {"name": plan.space.name, "path": plan.space_path, "size": plan.space.size()},
        "dataset": plan.dataset,
        "teacher": {"arch": plan.teacher.arch, "path": plan.teacher.path, "sha256": plan.teacher.sha256, "test_accuracy": plan.teacher.test_accuracy},
        "mode": plan.mode.describe(),
        "preset": plan.preset.name,
        "schedules": plan.preset.to_dict(),
        "schedule_changes": plan.schedule_changes(),
        "sampler": plan.sampler,
        "objectives": list(plan.objectives),
        "seeds": {"search": plan.seeds.search, "split": plan.seeds.split, "retrain": list(plan.seeds.retrain)},
        "requested_trials": plan.trials,
        "trial_counts": {**counts.__dict__, "finished": counts.finished},
        "trials_by_state": dict(Counter(r["state"] for r in rows)),
        "cut_short": cut_short(study, plan.trials),
        "search_wall_seconds": study.user_attrs.get("search_wall_seconds"),
        "trial_seconds": sum(r["duration_seconds"] or 0.0 for r in rows),
        "command": plan.command(),
        "winner": None,
        "baselines": None,
        "comparisons": None,
        "verdict": None,
        "trials": rows,
    }
    if winner is not None:
        cfg = StudentConfig.from_json(winner.user_attrs["config"])
        report["winner"] = {
            "trial": winner.number,
            "config": cfg.to_dict(),
            "describe": cfg.describe(),
            "search_val_accuracy": winner.values[0],
            "macs": winner.user_attrs["macs"],
            "params": winner.user_attrs["params"],
            "thop_macs": thop_macs(cfg, plan.input_shape, plan.num_classes),
        }
    if final is not None and not partial:
        w = final["winner"]
        report["winner"].update({"footprint": w.get("footprint"), "test_mean": w["test_mean"], "test_std": w["test_std"], "val_mean": w["val_mean"], "retrain_runs": w["runs"], "retrain_mode": w["mode"], "mode": w["mode"]})
        report["baselines"] = final["baselines"]
        report["comparisons"] = final.get("comparisons")
        report["final_schedule"] = final["schedule"]
        report["rescreen"] = final.get("rescreen")
        comparisons = {m: PairedDifference.from_dict(d) for m, d in (final.get("comparisons") or {}).items()}
        report["verdict"] = verdict_sentence(report["winner"], final["baselines"], comparisons, report["cut_short"])
    return report


def _markdown(r: dict) -> str:
    b, t = r["budget"], r["teacher"]
    title = f"# nas-kd report: {r['study']}" + (" (partial: search unfinished, no final retrain)" if r["partial"] else "")
    c = r["trial_counts"]
    wall = r["search_wall_seconds"]
    asked = f"{r['requested_trials']} requested" if r["requested_trials"] is not None else "bounded by --timeout"
    trials = f"{c['finished']} finished of {asked}: {c['trained']} trained, {c['pruned']} pruned, {c['failed']} failed; {c['rejected']} rejected over budget (never trained)"
    if c["abandoned"]:
        trials += f"; {c['abandoned']} abandoned (Ctrl-C or a dead worker)"
    lines = [title, ""]
    if r["verdict"]:
        lines += [f"**Verdict.** {r['verdict']}", ""]
    if r["cut_short"]:
        lines += [f"**The search was cut short**: {r['cut_short']}.", ""]
    lines += [
        f"- **Budget**: {b['describe']} (`{b['text']}`)",
        f"- **Space**: {r['space']['name']} (`{r['space']['path']}`, {r['space']['size']:,} students)",
        f"- **Dataset**: {r['dataset']}",
        f"- **Teacher**: {t['arch']}, test accuracy {_pct(t['test_accuracy'])} (`{t['path']}`, sha256 {t['sha256'][:12]})" if t["sha256"] else "- **Teacher**: none (the mode learns from labels alone)",
        f"- **Search**: preset {r['preset']}{_changes(r.get('schedule_changes') or {})}, mode {r['mode']}, sampler {r['sampler']}, objectives {' + '.join(r['objectives'])}, seed {r['seeds']['search']}"
        + (f"; wall time {wall:.0f} s (summed over sessions)" if wall is not None else ""),
        f"- **Trials**: {trials}",
    ]
    w = r["winner"]
    if w is None:
        lines += ["", "No candidate within budget has finished yet."]
    else:
        lines += [
            "",
            "## Winner",
            "",
            f"Trial {w['trial']}: `{w['describe']}`",
            "",
            "| | value |",
            "| --- | --- |",
            f"| MACs (fvcore) | {w['macs']:,} ({format_count(w['macs'])}) |",
            f"| MACs (thop) | {w['thop_macs']:,} ({format_count(w['thop_macs'])}) |" if w.get("thop_macs") is not None else "| MACs (thop) | thop could not be imported here |",
            f"| params | {w['params']:,} ({format_count(w['params'])}) |",
            f"| validation accuracy in the search (brief schedule) | {_pct(w['search_val_accuracy'])} |",
        ]
        fp = w.get("footprint")
        if fp:
            lat = fp["latency"]
            lines += [
                f"| peak activation memory ({fp['precision']}) | {fp['memory_bytes']:,} bytes |",
                f"| weight bytes ({fp['precision']}, BN folded) | {fp['size_bytes']:,} bytes |",
                f"| latency, measured (onnxruntime, batch 1, median of {lat['runs']} runs, {lat['threads']} thread, {lat['cpu']}) | {lat['median_ms']:.3f} ms |",
            ]
            if fp.get("latency_slowest_ms") is not None:
                lines.append(f"| latency at the slowest speed this machine showed in the search (ruler {lat['ruler_ms']:.3f} ms now, {fp['slowest_ruler_ms']:.3f} ms then; the limit is judged here) | {fp['latency_slowest_ms']:.3f} ms |")
        if "test_mean" in w:
            runs = w["retrain_runs"]
            lines.append(f"| **test accuracy**, full schedule, {len(runs)} seed(s), mode {w['retrain_mode']} | **{_mean_std(w)}** |")
        if r.get("rescreen"):
            best = sum(1 for row in r["rescreen"] if not row["baseline"])
            what = f"the {best} best brief candidates" + (" and the uniform baseline" if best < len(r["rescreen"]) else "")
            lines += ["", f"## Re-screen: {what} again, full schedule, search seed, validation split", ""]
            lines += ["| trial | MACs | brief val | full-schedule val | |", "| --- | --- | --- | --- | --- |"]
            for row in r["rescreen"]:
                tags = ", ".join(t for t, on in (("winner", row["trial"] == w["trial"]), ("uniform baseline", row["baseline"])) if on)
                lines.append(f"| {row['trial']} | {format_count(row['macs'])} | {_pct(row['brief_val_accuracy'])} | {_pct(row['rescreen_val_accuracy'])} | {tags} |")
    base = r["baselines"]
    if base:
        seeds = [run["seed"] for run in w["retrain_runs"]]
        lines += ["", "## Against the uniform baseline (same budget, full schedule, retrain seeds and mode)", ""]
        if base.get("passed_over"):
            # Held to the winner's rule (nas_kd.finalize.confirm_baseline): say which larger members missed it.
            missed = [f"`{m['describe']}` ({m['latency_ms']:.3f} ms, " + (f"in trial {m['trial']})" if m["trial"] is not None else "before the retrain)") for m in base["passed_over"]]
            lines += [f"Larger uniform members measured over the latency limit at the slowest speed seen, passed over as a winner would be: {', '.join(missed)}.", ""]
        lines += [
            f"Retrain seeds {', '.join(map(str, seeds))} (the search used seed {r['seeds']['search']}); test accuracy per seed, %:",
            "",
            "| student | MACs | params | mode | " + " | ".join(f"seed {s}" for s in seeds) + " | mean ± std |",
            "| --- | --- | --- | --- | " + " | ".join("---" for _ in seeds) + " | --- |",
        ]

        def row(name: str, macs: int, params: int, mode: str, summary: dict) -> str:
            acc = {run["seed"]: run["test_accuracy"] for run in summary["runs"]}
            return f"| {name} | {format_count(macs)} | {format_count(params)} | {mode} | " + " | ".join(f"{100 * acc[s]:.2f}" if s in acc else "-" for s in seeds) + f" | {_mean_std(summary)} |"

        lines.append(row(f"searched (trial {w['trial']})", w["macs"], w["params"], w["retrain_mode"], {"runs": w["retrain_runs"], "test_mean": w["test_mean"], "test_std": w["test_std"]}))
        for mode, s in base["modes"].items():
            lines.append(row(f"uniform `{base['describe']}`", base["macs"], base["params"], mode, s))
        if fp and base.get("footprint"):
            bfp = base["footprint"]
            lines += ["", f"Deployment figures (memory and size at {fp['precision']}, latency measured):", "", "| student | MACs | params | peak memory | size | latency |", "| --- | --- | --- | --- | --- | --- |"]
            for name, f in ((f"searched (trial {w['trial']})", fp), (f"uniform `{base['describe']}`", bfp)):
                lines.append(f"| {name} | {format_count(f['macs'])} | {format_count(f['params'])} | {format_quantity('memory', f['memory_bytes'])} | {format_quantity('size', f['size_bytes'])} | {f['latency_ms']:.3f} ms |")
            limit = r["budget"].get("latency")
            over = [f"{name} {f['latency_ms']:.3f} ms" for name, f in (("the searched student", fp), ("the uniform baseline", bfp)) if limit is not None and f["latency_ms"] > limit]
            if over:
                # Selected on earlier measurements under the limit; say so rather than let the table pass for a fit.
                lines += ["", f"**Over the latency limit ({limit:g} ms) when measured after the retrain**: {', '.join(over)}. Earlier measurements in the search fitted; on a machine whose latency jitters (docs/COST.md) a limit is met or missed by when it is measured."]
                speed = machine_speed_note(next((row for row in r["trials"] if row["number"] == w["trial"]), None), fp)
                if speed:
                    lines[-1] += " " + speed
            slow = [f"{name} {f['latency_slowest_ms']:.3f} ms" for name, f in (("the searched student", fp), ("the uniform baseline", bfp)) if limit is not None and f.get("latency_slowest_ms") is not None and f["latency_slowest_ms"] > limit]
            if slow:
                # The search judged the winner at its own measurements; this one, at the end, says the margin is gone.
                lines += ["", f"**Over the latency limit ({limit:g} ms) at the slowest speed the search saw**, measured after the retrain: {', '.join(slow)}. At this machine's slow speed the limit would be missed."]
        if r["comparisons"]:
            lines += ["", "| searched - baseline | paired seeds | mean difference (points) | 95% t-interval | |", "| --- | --- | --- | --- | --- |"]
            itself = chose_baseline(w, r["baselines"])
            for mode, d in r["comparisons"].items():
                # The re-screen chose the baseline: in its own mode the comparison is of one student with itself.
                what = "the same student (the search chose the baseline)" if itself and mode == w.get("mode") else d["direction"]
                lines.append(f"| baseline in mode {mode} | {d['n']} | {100 * d['mean']:+.2f} | {_interval(d)} | {what} |")
    lines += ["", "## Reproduce", "", "```", r["command"], "```", "", "Files: `trials.csv` (every trial), `pareto.png` (and `pareto-<limit>.png` for each other limit of the budget), `report.json`, `export/` (after the final retrain)."]
    return "\n".join(lines) + "\n"


def write_report(study, *, final: dict | None = None, partial: bool = False) -> dict[str, Path]:
    """Write the four report files; ``final`` defaults to ``final/final.json`` when it exists
    (ignored when ``partial``). Returns {file name: path}."""
    out = run_dir(study.study_name)
    out.mkdir(parents=True, exist_ok=True)
    if final is None and not partial:
        path = out / "final" / "final.json"
        final = json.loads(path.read_text()) if path.is_file() else None
    report = build_report(study, final, partial or final is None)
    paths = {name: out / name for name in ("report.md", "report.json", "trials.csv", "pareto.png")}
    with open(paths["trials.csv"], "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows(report["trials"])
    winner = report["winner"]["trial"] if report["winner"] else None
    budget = plan_of(study).budget
    # pareto.png on the budget's first limit; one more plot per other limit (pareto-latency.png, ...)
    for i, (quantity, limit) in enumerate(budget.limits().items()):
        name = "pareto.png" if i == 0 else f"pareto-{quantity}.png"
        paths[name] = plot_pareto(report["trials"], limit, winner, out / name, f"{report['study']}: {report['budget']['describe']}", x=quantity)
    write_json(paths["report.json"], report)
    paths["report.md"].write_text(_markdown(report))
    return paths


def _changes(changes: dict[str, str]) -> str:
    """' (brief schedule changed: batch_size=512; ...)', or '' without --brief/--full."""
    return f" ({describe_schedule_changes(changes)})" if changes else ""
