"""Latency on onnxruntime: the measurement's protocol, the per-machine table, and whole searches on
synthetic data under latency and memory + size budgets whose winners meet every limit measured."""

from __future__ import annotations

import json
import os

import pytest

from nas_kd.config import PRECISIONS, parse_budget
from nas_kd.latency import RULER, RUNS, LatencyTable, machine, measure_latency
from nas_kd.memory import size_bytes, traced_peak_elements
from nas_kd.meter import TABLE_LATENCY_ATTR, BudgetMeter
from nas_kd.models.student import StudentConfig, build_student
from nas_kd.space import SearchSpace

SHAPE, CLASSES = (1, 16, 16), 10
TINY, TINY_YAML = SearchSpace.read("search_spaces/tiny.yaml")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NAS_KD_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_measurement_protocol(cache):
    got = measure_latency(TINY.smallest(), SHAPE, CLASSES)
    assert got.runs >= RUNS and got.threads == 1 and got.cpu == machine().cpu and got.onnxruntime
    assert 0 < got.p10_ms <= got.median_ms <= got.p90_ms


def test_table_is_cached_per_machine_and_predicts(cache):
    table = LatencyTable()
    # The file is named by the machine's key: CPU model (as a file name: "Intel(R)" -> "Intel_R_"),
    # threads and onnxruntime version.
    assert table.path == cache / "latency" / f"{machine().key}.json"
    assert machine().key.startswith("".join(ch if ch.isalnum() else "_" for ch in machine().cpu.split()[0]))
    cfg = TINY.largest()
    predicted = table.predict_rulers(cfg, SHAPE, CLASSES)
    parts = 1 + sum(s.depth for s in cfg.stages) + 1  # stem, blocks, head
    assert table.measured == parts + 1  # and the call overhead
    again = LatencyTable()  # a second process: every entry comes from the file
    assert again.predict_rulers(cfg, SHAPE, CLASSES) == predicted and again.measured == 0
    assert again.created == table.created is not None  # one table, however often it is loaded and saved
    other = LatencyTable(threads=2)  # another thread count is another machine key, another table
    assert other.path != table.path and not other.entries
    stored = json.loads(table.path.read_text())
    assert stored["machine"]["threads"] == 1 and len(stored["entries"]) == parts + 1 and stored["unit"] == RULER
    # The prediction is the stored parts, each part's call overhead taken off all but one of them
    call = stored["entries"]["call"]
    blocks = [v for k, v in stored["entries"].items() if k != "call"]
    assert predicted == pytest.approx(sum(blocks) - (len(blocks) - 1) * call, rel=1e-12) and call > 0
    # ... in milliseconds at the speed the ruler measures now
    assert table.predict(cfg, SHAPE, CLASSES) == pytest.approx(predicted * table.ruler_ms, rel=1e-12) and table.ruler_ms > 0
    # ... and through the space's calibration line, fitted once on whole measured members
    line = table.calibration(TINY, SHAPE, CLASSES)
    assert line["students"] == len(line["measured_rulers"]) == 12 and all(r > 0 for r in line["measured_rulers"])
    assert table.predict_rulers(cfg, SHAPE, CLASSES, space=TINY) == pytest.approx(line["scale"] * predicted + line["offset"])
    assert LatencyTable().calibrations == table.calibrations  # cached with the entries
    # A table cached in another unit (milliseconds, before rulers) is not read: it is rebuilt.
    table.path.write_text(json.dumps({**stored, "unit": None}))
    assert not LatencyTable().entries
    # Accuracy against measurements is a benchmark (docs/COST.md), not a test: on a loaded
    # machine single measurements jitter by tens of percent.


def test_entries_measured_at_different_machine_speeds_agree(cache, monkeypatch):
    """The ruler is what keeps a table consistent when the machine's speed drifts between entries
    (nas_kd.latency's docstring): entries measured on a machine 3x slower agree with entries
    measured at full speed, though every millisecond figure is 3x larger."""
    import nas_kd.latency as latency

    cfg = TINY.largest()
    # The slow machine replays the fast one's own timings, 3x longer: a fresh measurement would
    # add run-to-run noise (up to 30% on a small part on a VM whose ruler takes 0.05 ms), and
    # busy-waiting inside each run stretched the graph but not the timer's own microsecond.
    recorded: list = []
    real_against, real_graph = latency.time_against, latency.time_graph
    monkeypatch.setattr(latency, "time_against", lambda *a, **k: recorded.append(real_against(*a, **k)) or recorded[-1])
    monkeypatch.setattr(latency, "time_graph", lambda *a, **k: recorded.append(real_graph(*a, **k)) or recorded[-1])
    fast_table = LatencyTable(path=cache / "fast.json")
    fast_table.sum_of_parts_rulers(cfg, SHAPE, CLASSES)
    fast_ruler_ms = fast_table.ruler_ms

    def slower(times):
        return tuple([3 * t for t in ts] for ts in times) if isinstance(times, tuple) else [3 * t for t in times]

    replay = iter(recorded)
    monkeypatch.setattr(latency, "time_against", lambda *a, **k: slower(next(replay)))
    monkeypatch.setattr(latency, "time_graph", lambda *a, **k: slower(next(replay)))
    slow_table = LatencyTable(path=cache / "slow.json")
    slow_table.sum_of_parts_rulers(cfg, SHAPE, CLASSES)
    # Each part's entry in rulers, not their sum less the call overheads: that difference of
    # near-equal numbers amplifies the measurements' noise.
    assert set(slow_table.entries) == set(fast_table.entries)
    assert sum(slow_table.entries.values()) == pytest.approx(sum(fast_table.entries.values()), rel=0.3)
    assert slow_table.ruler_ms > 2 * fast_ruler_ms  # the machine really was slower


def _search(root, budget: str, study: str):
    from nas_kd.cli import main

    args = ["search", "--dataset", "synthetic", "--space", "search_spaces/tiny.yaml", "--budget", budget, "--trials", "2", "--retrain-seeds", "1", "--mode", "ce", "--study", study, "--preset", "quick", "--device", "cpu"]
    cwd = os.getcwd()
    os.chdir(root)
    try:
        os.makedirs("search_spaces", exist_ok=True)
        with open("search_spaces/tiny.yaml", "w") as f:
            f.write(TINY_YAML)
        assert main(args) == 0
        from nas_kd.study import load_study

        return load_study(study), json.loads((root / "runs" / study / "final" / "final.json").read_text()), json.loads((root / "runs" / study / "report.json").read_text())
    finally:
        os.chdir(cwd)


def test_latency_budget_search_winner_meets_the_limit_measured(tmp_path, cache):
    from nas_kd.finalize import LATENCY_CHECKS_ATTR, measured_latencies, pick_winner

    meter = BudgetMeter(parse_budget("latency:1ms"), SHAPE, CLASSES, TINY)
    cheap = (TINY.smallest(), TINY.uniform(0))
    floor = max([meter.values(c)["latency"] for c in cheap] + [meter.at_slowest(meter.measure_latency(c)) for c in cheap])
    # Three times the cheapest, predicted or measured: on a loaded 2-core machine single
    # measurements jitter by tens of percent, and a study whose every trained candidate measures
    # over the limit (rightly) ends without a winner. At twice it did so once in CI (2026-12-06):
    # one ruler timing of 0.128 ms among ~0.091 set the slowest speed seen, which scales every
    # candidate's measurement by as much (0.023 ms now, 0.038 at the slowest, limit 0.0348). What
    # this test checks is the measured path, not that the limit binds (what a candidate measured
    # over it does to the winner is the last assertion's: set by hand).
    limit = round(3.0 * floor, 4)
    study, final, report = _search(tmp_path, f"latency:{limit}ms", "lat")
    winner = pick_winner(study)
    assert winner.number == final["winner"]["trial"]
    assert measured_latencies(study)[winner.number] <= limit  # measured, in the trial or before finalizing, at the slowest speed seen
    footprint = final["winner"]["footprint"]
    assert footprint["latency_slowest_ms"] >= footprint["latency"]["rulers"] * footprint["latency"]["ruler_ms"] * (1 - 1e-9)  # never faster than now
    # every prediction keeps the table's own figure, which the study's correction is fitted to (nas_kd.meter)
    predicted = [t for t in study.trials if "predicted_latency_ms" in t.user_attrs]
    assert predicted and all(t.user_attrs[TABLE_LATENCY_ATTR] > 0 for t in predicted)
    assert final["winner"]["footprint"]["latency"]["runs"] >= RUNS and final["baselines"]["footprint"]["latency_ms"] > 0
    assert report["winner"]["footprint"]["latency_ms"] == final["winner"]["footprint"]["latency_ms"]
    # a final measurement over the limit is said in the report, not left for the table to pass as a fit
    from nas_kd.report import _markdown

    # (about the winner; the baseline, measured within the limit before its retrain, may still miss it after)
    def said_over(kind: str) -> bool:
        return any(line.startswith(f"**Over the latency limit ({limit:g} ms) {kind}") and "the searched student" in line for line in _markdown(report).splitlines())

    assert not said_over("when measured") or report["winner"]["footprint"]["latency_ms"] > limit
    assert not said_over("at the slowest") or report["winner"]["footprint"]["latency_slowest_ms"] > limit
    report["winner"]["footprint"]["latency_slowest_ms"] = 2 * limit  # over at the slow speed only: said too
    assert "at the slowest speed the search saw**, measured after the retrain: the searched student" in _markdown(report)
    report["winner"]["footprint"]["latency_ms"] = 10 * limit
    assert "Over the latency limit" in _markdown(report)
    assert final["winner"]["footprint"]["latency"]["ruler_ms"] > 0  # how fast the machine was when it was measured
    # a winner whose real measurement is over the limit is no winner, whatever was predicted
    study.set_user_attr(LATENCY_CHECKS_ATTR, {str(winner.number): 10 * limit})
    assert pick_winner(study) is None or pick_winner(study).number != winner.number


def test_the_report_tells_a_slower_machine_from_a_slower_student():
    from nas_kd.report import machine_speed_note

    trial = {"latency_ms": 0.8, "latency_ruler_ms": 0.1}
    slower_machine = machine_speed_note(trial, {"latency_ms": 1.6, "latency": {"ruler_ms": 0.2}})
    assert "0.100 ms in the search and 0.200 ms now" in slower_machine and "2.00x as slow, and the student, relative to the ruler, 1.00x" in slower_machine
    slower_student = machine_speed_note(trial, {"latency_ms": 1.6, "latency": {"ruler_ms": 0.1}})
    assert "1.00x as slow, and the student, relative to the ruler, 2.00x" in slower_student
    assert machine_speed_note({"latency_ms": 0.8, "latency_ruler_ms": None}, {"latency_ms": 1.6, "latency": {"ruler_ms": 0.1}}) is None  # measured before rulers


def test_memory_and_size_budget_search_winner_meets_both(tmp_path, cache):
    int8 = PRECISIONS["int8"]
    meter = BudgetMeter(parse_budget("memory:1M,size:1M"), SHAPE, CLASSES)
    values = [meter.values(c) for c in (TINY.smallest(), TINY.largest(), TINY.uniform(0))]
    memory = max(values[2]["memory"], (values[0]["memory"] + values[1]["memory"]) // 2)
    size = max(values[2]["size"], (values[0]["size"] + values[1]["size"]) // 2)
    study, final, report = _search(tmp_path, f"memory:{memory},size:{size}", "memsize")
    cfg = StudentConfig.from_dict(final["winner"]["config"])
    measured_memory = traced_peak_elements(build_student(cfg, 1, CLASSES), SHAPE)[0] * int8.activation
    assert measured_memory == final["winner"]["footprint"]["memory_bytes"] <= memory
    assert size_bytes(cfg, SHAPE, CLASSES, int8) == final["winner"]["footprint"]["size_bytes"] <= size
    assert all(r["memory_bytes"] <= memory and r["size_bytes"] <= size for r in report["trials"] if r["state"] == "COMPLETE")
    run = tmp_path / "runs" / "memsize"
    # one Pareto plot per budgeted quantity; the report shows the deployment figures of both students
    assert (run / "pareto.png").read_bytes()[:4] == b"\x89PNG" and (run / "pareto-size.png").read_bytes()[:4] == b"\x89PNG"
    markdown = (run / "report.md").read_text()
    assert f"| peak activation memory (int8) | {measured_memory:,} bytes |" in markdown and "| searched (trial" in markdown


def test_a_table_from_another_machine_or_unit_is_not_read_and_saves_merge(tmp_path):
    """Entries are times relative to this machine's ruler: another machine's file (a shared cache
    folder, a copied home) must not be read. Two processes filling one table both keep theirs."""
    from dataclasses import asdict

    path = tmp_path / "table.json"
    here = asdict(machine())
    path.write_text(json.dumps({"machine": {**here, "cpu": "another cpu"}, "unit": RULER, "entries": {"part": 1.5}}))
    assert LatencyTable(path).entries == {}
    path.write_text(json.dumps({"machine": here, "unit": RULER, "entries": {"part": 1.5}}))
    assert LatencyTable(path).entries == {"part": 1.5}
    first, second = LatencyTable(path), LatencyTable(path)  # both opened before either writes
    first.entries["a"] = 2.0
    first._save()
    second.entries["b"] = 3.0
    second._save()
    assert LatencyTable(path).entries == {"part": 1.5, "a": 2.0, "b": 3.0}


def test_the_calibration_line_is_per_space_and_fits_relative_error(tmp_path, monkeypatch):
    """A line per space's decisions, not per name (an edited space keeps its name), fitted on
    relative error: the many small students a search proposes are not traded for one large one
    (here 11 students on the line and the largest 30% off it: the relative fit misses the small
    ones by under 6%, an absolute fit by 15%)."""
    import nas_kd.latency as latency

    table = LatencyTable(tmp_path / "table.json")
    sums: dict[str, float] = {}

    def fake_sum(cfg, shape, classes):
        name = cfg.describe()
        if name not in sums:
            sums[name] = 100.0 if name == TINY.largest().describe() else 1.0 + 0.1 * sum(v < 100 for v in sums.values())
        return sums[name]

    def fake_measure(cfg, shape, classes, runs, threads):
        s = fake_sum(cfg, shape, classes)
        return 0.0, 130.0 if s == 100.0 else s

    monkeypatch.setattr(table, "sum_of_parts_rulers", fake_sum)
    monkeypatch.setattr(latency, "student_against_ruler", fake_measure)
    line = table.calibration(TINY, SHAPE, CLASSES)
    small = [(x, y) for x, y in zip(line["sums_rulers"], line["measured_rulers"], strict=True) if y < 100]
    assert len(small) == len(line["sums_rulers"]) - 1 >= 8
    assert max(abs(line["scale"] * x + line["offset"] - y) / y for x, y in small) < 0.08
    edited = SearchSpace.from_yaml(TINY_YAML.replace("width: [16, 32]", "width: [16, 24]"), source="tiny.yaml")
    assert edited.name == TINY.name
    table.calibration(edited, SHAPE, CLASSES)
    assert len(table.calibrations) == 2
