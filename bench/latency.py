"""How well the latency table predicts onnxruntime's measured latency, and how much measurements
jitter. Writes the "latency" section of docs/BENCHMARKS.md and docs/results/latency.json.

    .venv/bin/python -m bench.latency [--space search_spaces/mbv2.yaml] [--candidates 50] [--repeats 10]

Random members of the space on Fashion-MNIST's 1x28x28 input: each is predicted by the machine's
`LatencyTable` (its sum of parts through the space's calibration line, in rulers, times the
ruler's time now; built on demand, cached under ~/.cache/nas-kd) and measured by `measure_latency`
(median of >= 100 runs spanning >= 0.2 s, 1 thread), and once more against the ruler
(`measure_relative`): the error in rulers is the table's own, without the machine's drift since
the ruler was timed. Rows are kept in the JSON file as they are measured, so an interrupted run
resumes where it stopped (same table file, space and seed); a run on another machine or runtime,
or after the table was rebuilt, starts afresh. Jitter: a few students measured ``--repeats`` times each, in ms and in rulers. The
load average is recorded before and after: figures taken on a busy CPU are noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time
from pathlib import Path

from bench._report import write_section
from nas_kd.device import torch_threads
from nas_kd.latency import (
    MIN_SECONDS,
    RULER,
    RUNS,
    LatencyTable,
    machine,
    measure_latency,
    student_against_ruler,
)
from nas_kd.space import SearchSpace
from nas_kd.stats import percentile, spearman

RESULTS = Path(__file__).resolve().parent.parent / "docs" / "results" / "latency.json"
SHAPE, CLASSES = (1, 28, 28), 10


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="search_spaces/mbv2.yaml")
    ap.add_argument("--candidates", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    space = SearchSpace.load(args.space)
    m = machine()
    table = LatencyTable()

    def key() -> dict:
        # Rows resume only against the very table that predicted them: another VM with the same
        # CPU model name (same machine key) runs at another speed, and its fresh table is another
        # table. `table.created` is set by the table's first save.
        return {"machine": m.key, "space": args.space, "seed": args.seed, "shape": list(SHAPE), "predictor": "calibrated sum of parts", "unit": RULER, "table_created": table.created}

    old = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    rows = old.get("rows", []) if table.created is not None and old.get("key") == key() else []
    load_before = os.getloadavg()
    start = time.perf_counter()
    with torch_threads(1):
        rng = random.Random(args.seed)
        members = [space.random_config(rng) for _ in range(args.candidates)]
        for i, cfg in enumerate(members):
            if i < len(rows):
                continue
            predicted = table.predict(cfg, SHAPE, CLASSES, space=space)
            got = measure_latency(cfg, SHAPE, CLASSES)
            rulers = student_against_ruler(cfg, SHAPE, CLASSES)[1]
            rows.append({"config": cfg.describe(), "predicted_ms": predicted, "sum_of_parts_ms": table.sum_of_parts(cfg, SHAPE, CLASSES), "measured_ms": got.median_ms, "p10_ms": got.p10_ms, "p90_ms": got.p90_ms, "runs": got.runs,
                         "predicted_rulers": table.predict_rulers(cfg, SHAPE, CLASSES, space=space), "measured_rulers": rulers})  # fmt: skip
            RESULTS.parent.mkdir(parents=True, exist_ok=True)
            RESULTS.write_text(json.dumps({"key": key(), "rows": rows}, indent=1))
            print(f"{i + 1}/{len(members)} predicted {predicted:.3f} ms measured {got.median_ms:.3f} ms  {cfg.describe()}", flush=True)
        jitter = []
        for cfg in (space.smallest(), members[0], space.largest()):
            pairs = [student_against_ruler(cfg, SHAPE, CLASSES) for _ in range(args.repeats)]
            medians, ratios = [ms for ms, _ in pairs], [r for _, r in pairs]
            jitter.append({"config": cfg.describe(), "medians_ms": medians, "cv": statistics.stdev(medians) / statistics.fmean(medians), "max_over_min": max(medians) / min(medians),
                           "rulers": ratios, "cv_rulers": statistics.stdev(ratios) / statistics.fmean(ratios), "max_over_min_rulers": max(ratios) / min(ratios)})  # fmt: skip
    errors = [abs(r["predicted_ms"] / r["measured_ms"] - 1) for r in rows]
    ruler_errors = [abs(r["predicted_rulers"] / r["measured_rulers"] - 1) for r in rows]
    raw_errors = [abs(r["sum_of_parts_ms"] / r["measured_ms"] - 1) for r in rows]
    line = table.calibration(space, SHAPE, CLASSES)
    summary = {
        "candidates": len(rows),
        "median_rel_error": statistics.median(errors),
        "p95_rel_error": percentile(errors, 0.95),
        "spearman": spearman([r["predicted_ms"] for r in rows], [r["measured_ms"] for r in rows]),
        "mean_signed_error": statistics.fmean(r["predicted_ms"] / r["measured_ms"] - 1 for r in rows),
        "median_rel_error_rulers": statistics.median(ruler_errors),
        "p95_rel_error_rulers": percentile(ruler_errors, 0.95),
        "spearman_rulers": spearman([r["predicted_rulers"] for r in rows], [r["measured_rulers"] for r in rows]),
        "ruler_ms": table.ruler_ms,
        "uncalibrated_median_rel_error": statistics.median(raw_errors),
        "uncalibrated_p95_rel_error": percentile(raw_errors, 0.95),
        "calibration": {"scale": line["scale"], "offset_ms": line["offset"], "students": line["students"]},
        "table_entries": len(table.entries),
        "table_entries_measured_now": table.measured,
    }
    load_after = os.getloadavg()
    result = {"key": key(), "machine": {"cpu": m.cpu, "threads": m.threads, "onnxruntime": m.onnxruntime, "cores": os.cpu_count()}, "protocol": {"runs": RUNS, "min_seconds": MIN_SECONDS}, "load_average_before": load_before, "load_average_after": load_after, "seconds": time.perf_counter() - start, "summary": summary, "jitter": jitter, "rows": rows}
    RESULTS.write_text(json.dumps(result, indent=1))
    s = summary
    body = [
        "## latency: predicted against measured (onnxruntime, batch 1)",
        "",
        f"Command: `.venv/bin/python -m bench.latency --space {args.space} --candidates {args.candidates} --repeats {args.repeats}`; "
        f"{m.cpu}, {os.cpu_count()} cores, onnxruntime {m.onnxruntime}, {m.threads} thread; input {'x'.join(map(str, SHAPE))}, {CLASSES} classes; "
        f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after (1 min). Rows: `docs/results/latency.json`.",
        "",
        "| random members | median relative error | 95th-percentile relative error | Spearman | mean signed error | table entries |",
        "| --- | --- | --- | --- | --- | --- |",
        f"| {s['candidates']} | {100 * s['median_rel_error']:.1f}% | {100 * s['p95_rel_error']:.1f}% | {s['spearman']:.3f} | {100 * s['mean_signed_error']:+.1f}% | {s['table_entries']} |",
        "",
        f"In rulers (each member timed against the ruler, `{RULER}`, {s['ruler_ms']:.3f} ms when this run began): median {100 * s['median_rel_error_rulers']:.1f}%, "
        f"95th percentile {100 * s['p95_rel_error_rulers']:.1f}%, Spearman {s['spearman_rulers']:.3f}: the table's own error, without the machine's drift since the ruler was timed.",
        "",
        f"Prediction = {s['calibration']['scale']:.3f} x (sum of the table's parts) {s['calibration']['offset_ms']:+.4f} ms, the line fitted on {s['calibration']['students']} other members "
        f"of the space; the sum of parts alone: median {100 * s['uncalibrated_median_rel_error']:.1f}%, 95th percentile {100 * s['uncalibrated_p95_rel_error']:.1f}%.",
        "",
        f"Jitter: each student measured {args.repeats} times (each a median of >= {RUNS} runs spanning >= {MIN_SECONDS} s, alternating with the ruler's runs; in rulers: that median over the ruler's).",
        "",
        "| student | median of medians (ms) | coefficient of variation | max / min | in rulers: coefficient of variation | max / min |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for j in jitter:
        body.append(f"| `{j['config']}` | {statistics.median(j['medians_ms']):.3f} | {100 * j['cv']:.1f}% | {j['max_over_min']:.2f} | {100 * j['cv_rulers']:.1f}% | {j['max_over_min_rulers']:.2f} |")
    write_section("latency", "\n".join(body))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
