"""`make search` from a fresh clone, timed: set-up, teacher, search, retrain, report, export.

    python -m bench.e2e_search [--budget 2M] [--keep DIR]

Clones this repository's HEAD into a temporary folder, runs `make search BUDGET=...` there (a new
.venv, the pinned torch, the package; the shipped teacher, or one trained from scratch where none
ships), then the same command again (it must resume and finish at once), and writes the
"e2e-search" section of docs/BENCHMARKS.md (for another budget than 2M, "e2e-search-<budget>")
with both wall times and the report's headline figures.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from bench._report import budget_slug, hardware, write_section
from nas_kd.config import PRESETS, Preset

ROOT = Path(__file__).resolve().parent.parent


def _timed(cmd: list[str], cwd: Path) -> tuple[float, str]:
    t0 = time.perf_counter()
    # A machine seen for the first time: nas-kd's cache (the latency table) starts empty too.
    env = {**os.environ, "NAS_KD_CACHE": str(cwd.parent / "nas-kd-cache")}
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return time.perf_counter() - t0, r.stdout


def _procedure(preset: Preset) -> str:
    """The preset's search procedure in words, as this run's clone did it."""
    prune = "median pruning after the first brief epoch" if preset.prune else "no pruning"
    rescreen = f"the re-screen of the brief top {preset.rescreen} and the baseline" if preset.rescreen > 1 else "no re-screen: the brief run's best wins"
    return f"{preset.trials} trials ({prune}, {rescreen})"


def section_name(budget: str) -> str:
    """"e2e-search" for the default 2M, "e2e-search-latency-1ms" for latency:1ms, and so on."""
    return "e2e-search" if budget == "2M" else "e2e-search-" + budget_slug(budget)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", default="2M")
    ap.add_argument("--keep", default=None, metavar="DIR", help="copy the clone's runs/ (study, report, final retrain) and the first run's log into DIR: the clone itself is deleted")
    args = ap.parse_args(argv)
    if args.keep and Path(args.keep).exists() and any(Path(args.keep).iterdir()):
        raise SystemExit(f"e2e_search: --keep {args.keep} is not empty: name a new or empty folder")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="nas-kd-e2e-") as tmp:
        clone = Path(tmp) / "nas-kd"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        first, log = _timed(["make", "search", f"BUDGET={args.budget}"], clone)
        again, _ = _timed(["make", "search", f"BUDGET={args.budget}"], clone)
        report_path = next((clone / "runs").glob("*/report.json"))
        excerpt = "\n".join(line for line in (report_path.parent / "report.md").read_text().splitlines() if not line.startswith(("## Reproduce", "```", "Files:", "nas-kd search")))
        teacher_line = next((line for line in log.splitlines() if line.startswith(("teacher: test accuracy", "teacher: the shipped"))), "")
        last_line = log.strip().splitlines()[-1]  # the verdict: the last thing make search prints
        if args.keep:  # the study is what explains a surprising verdict; the clone goes with tmp
            keep = Path(args.keep)
            shutil.copytree(clone / "runs", keep / "runs", ignore=shutil.ignore_patterns("teachers"))
            (keep / "search.log").write_text(log)
    body = "\n".join([
        f"## `make search BUDGET={args.budget}` from a fresh clone (CPU)",
        "",
        f"Command: `python -m bench.e2e_search --budget {args.budget}` (commit {commit})  ",
        f"Hardware: {hardware()}  ",
        "Steps: `git clone`, then `make search` (new .venv, pinned torch, package and extras, the teacher (line below), the "
        f"quick preset's {_procedure(PRESETS['quick'])}, 3-seed retrain of the winner and of the uniform baseline in the same mode and "
        "with ce, on seeds the search never used, report, export), then the same command again.",
        "",
        "| run | wall time |",
        "|---|---:|",
        f"| first (set-up included) | {first / 60:.1f} min |",
        f"| again (resume) | {again:.1f} s |",
        "",
        f"Target: under 15 minutes, and the second run at once. {teacher_line.strip()}",
        "",
        f"Its last line: `{last_line}`",
        "",
        "The report it wrote (without the reproduce block):",
        "",
        "```",
        excerpt,
        "```",
    ])
    write_section(section_name(args.budget), body)
    print(body)


if __name__ == "__main__":
    main()
