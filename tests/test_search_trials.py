"""bench.search_trials: winner against baseline per trial count, and count against count, paired."""

from __future__ import annotations

from bench.search_trials import analyse, render


def _row(trials: int, seed: int, winner: list[float], baseline: list[float], same: bool = False) -> dict:
    retrain = [seed + 1 + i for i in range(len(winner))]
    return {
        "trials": trials,
        "search_seed": seed,
        "wall_seconds": 10.0,
        "winner": {"describe": "base" if same else f"w{trials}{seed}", "macs": 1, "search_val_accuracy": 0.8, "test_by_seed": dict(zip(retrain, winner, strict=True))},
        "baseline": {"describe": "base", "macs": 1, "test_by_seed": dict(zip(retrain, baseline, strict=True))},
    }


def test_pairs_by_search_seed_and_by_retrain_seed():
    rows = [
        _row(8, 0, [0.90, 0.92], [0.89, 0.89]),
        _row(8, 1, [0.88, 0.88], [0.89, 0.89], same=True),
        _row(24, 0, [0.91, 0.93], [0.89, 0.89]),
        _row(24, 1, [0.90, 0.90], [0.89, 0.89]),
    ]
    a = analyse(rows)
    eight = a["per_count"][8]
    assert eight["winner_is_baseline"] == 1
    assert abs(eight["winner_minus_baseline_by_search"]["mean"] - (0.02 + -0.01) / 2) < 1e-12
    assert abs(eight["winner_minus_baseline"]["mean"] - (0.01 + 0.03 - 0.01 - 0.01) / 4) < 1e-12
    # 24 - 8 per search seed: seed 0 0.92 - 0.91, seed 1 0.90 - 0.88.
    v = a["versus"]
    assert (v["more"], v["fewer"]) == (24, 8) and abs(v["more_minus_fewer"]["mean"] - (0.01 + 0.02) / 2) < 1e-12
    assert "24 trials minus 8" in render({"rows": rows, "command": "c", "date": "d", "hardware": "h", "budget": "2M", "retrain_seeds": 2})
    assert "**Note.** re-measured" in render({"rows": rows, "command": "c", "date": "d", "hardware": "h", "budget": "2M", "retrain_seeds": 2, "note": "re-measured"})


def test_more_search_seeds_extend_the_record_and_train_each_baseline_once(tmp_path, monkeypatch):
    import json

    import bench.search_trials as bench

    monkeypatch.setattr(bench, "RESULTS", tmp_path / "search_trials.json")
    monkeypatch.setattr(bench, "write_section", lambda *a, **k: None)
    asked = []

    def fake_run_one(opts, log=print):
        asked.append((opts.trials, opts.seed, opts.baselines))
        runs = [{"seed": opts.seed + 1, "test_accuracy": 0.9}]
        report = {"bench_seconds": 1.0, "winner": {"describe": "w", "macs": 1, "search_val_accuracy": 0.8, "retrain_runs": runs}}
        if opts.baselines:
            report["baselines"] = {"describe": "b", "macs": 1, "modes": {"kd": {"runs": [{"seed": opts.seed + 1, "test_accuracy": 0.89}]}, "ce": {"runs": [{"seed": opts.seed + 1, "test_accuracy": 0.88}]}}}
        return report

    monkeypatch.setattr(bench, "run_one", fake_run_one)
    bench.main(["--trials", "8,24", "--search-seeds", "0", "--retrain-seeds", "1"])
    bench.main(["--trials", "8,24", "--search-seeds", "0,1", "--retrain-seeds", "1"])
    # Seed 0's two searches are not run again; each seed's first search alone trains the baseline.
    assert asked == [(8, 0, True), (24, 0, False), (8, 1, True), (24, 1, False)]
    record = json.loads((tmp_path / "search_trials.json").read_text())
    assert sorted((r["trials"], r["search_seed"]) for r in record["rows"]) == [(8, 0), (8, 1), (24, 0), (24, 1)]
    assert len(record["commands"]) == 2 and all(r["baseline"]["test_by_seed"] for r in record["rows"])
    # The search's own ce baseline is kept too (bench.search_vs_ce reads it rather than train it again).
    assert all(r["baseline"]["ce_test_by_seed"] == {str(r["search_seed"] + 1): 0.88} for r in record["rows"])
    # A record extended on another day keeps the first day too (older records had one "date").
    import datetime as dt

    assert record["dates"] == [dt.date.today().isoformat()]
    old = {**record, "date": "2026-01-01"}
    del old["dates"]
    (tmp_path / "search_trials.json").write_text(json.dumps(old))
    bench.main(["--trials", "8", "--search-seeds", "2", "--retrain-seeds", "1"])
    extended = json.loads((tmp_path / "search_trials.json").read_text())
    assert extended["dates"] == ["2026-01-01", dt.date.today().isoformat()] and "(2026-01-01, " in bench.render(extended)
    record = extended
    # Another budget gets a record of its own: the 2M rows stay as they were.
    bench.main(["--trials", "8", "--search-seeds", "0", "--retrain-seeds", "1", "--budget", "500k"])
    assert json.loads((tmp_path / "search_trials.json").read_text()) == record
    assert [r["search_seed"] for r in json.loads((tmp_path / "search_trials_500k.json").read_text())["rows"]] == [0]
    # Other retrain seeds would pair unlike searches: refused before any search runs.
    before = len(asked)
    assert bench.main(["--trials", "8", "--search-seeds", "5", "--retrain-seeds", "3"]) == 2 and len(asked) == before


def test_the_independent_interval_keeps_only_searches_that_share_no_retrain_seed():
    """Search s retrains on s+1..s+3: searches 0 and 3 share none, 1 and 2 share seeds with 0, and
    so does 4 with 3. Only 0 and 3 (and not 1, 2, 4 with their large differences) enter it."""
    from bench.search_trials import baseline_cells, disjoint_searches

    rows = [_row(8, s, [0.90 + (0.05 if s in (1, 2, 4) else 0.01 * s)] * 3, [0.89] * 3) for s in range(5)]
    assert disjoint_searches(rows) == [0, 3] and disjoint_searches(rows[::-1]) == [0, 3]
    c = analyse(rows)["per_count"][8]
    d = c["winner_minus_baseline_disjoint"]
    assert d["seeds"] == [0, 3] and abs(d["mean"] - (0.01 + 0.04) / 2) < 1e-12
    assert c["winner_minus_baseline_by_search"]["seeds"] == [0, 1, 2, 3, 4]
    assert "(search seeds 0, 3)" in baseline_cells(c) and "search seeds 0, 3" in render({"rows": rows, "command": "c", "date": "d", "hardware": "h", "budget": "2M", "retrain_seeds": 3})
