"""bench.search_startup: each TPE start-up count against the first, paired by search seed."""

from __future__ import annotations

import json

import bench.search_startup as bench


def _row(startup: int, seed: int, winner: float, baseline: float, same: bool = False) -> dict:
    return {
        "startup": startup,
        "trials": 8,
        "search_seed": seed,
        "wall_seconds": 10.0,
        "winner": {"describe": "base" if same else f"w{startup}{seed}", "macs": 1, "search_val_accuracy": 0.8, "test_by_seed": {seed + 1: winner}},
        "baseline": {"describe": "base", "macs": 1, "test_by_seed": {seed + 1: baseline}},
    }


def test_each_count_is_paired_with_the_reference_by_search_seed():
    rows = [_row(10, 0, 0.90, 0.89), _row(4, 0, 0.92, 0.89), _row(10, 1, 0.89, 0.89, same=True), _row(4, 1, 0.88, 0.89)]
    a = bench.analyse(rows, reference=10)
    assert a["per_startup"][10]["winner_is_baseline"] == 1 and set(a["versus"]) == {4}
    # 4 minus 10 per search seed: +0.02, -0.01 (not 10 minus 4).
    assert abs(a["versus"][4]["mean"] - (0.02 - 0.01) / 2) < 1e-12
    record = {"rows": rows, "commands": ["c"], "dates": ["d"], "hardware": "h", "budget": "2M", "trials": 8, "startup": [10, 4], "retrain_seeds": 1}
    text = bench.render(record)
    assert "(reference)" in text and "start-up-10 winner" in text
    assert "**Note.** pruned" in bench.render({**record, "note": "pruned"})


def test_the_count_reaches_the_search_and_each_seed_trains_its_baseline_once(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bench, "RESULTS", tmp_path / "search_startup.json")
    monkeypatch.setattr(bench, "write_section", lambda *a, **k: None)
    asked = []

    def fake_run_one(opts, log=print):
        asked.append((opts.startup_trials, opts.seed, opts.baselines, opts.trials))
        report = {"bench_seconds": 1.0, "winner": {"describe": "w", "macs": 1, "search_val_accuracy": 0.8, "retrain_runs": [{"seed": opts.seed + 1, "test_accuracy": 0.9}]}}
        if opts.baselines:
            report["baselines"] = {"describe": "b", "macs": 1, "modes": {"kd": {"runs": [{"seed": opts.seed + 1, "test_accuracy": 0.89}]}}}
        return report

    monkeypatch.setattr(bench, "run_one", fake_run_one)
    assert bench.main(["--startup", "10,4", "--search-seeds", "0", "--retrain-seeds", "1"]) == 0
    record = json.loads((tmp_path / "search_startup.json").read_text())
    (tmp_path / "search_startup.json").write_text(json.dumps({**record, "hardware": "another VM"}))
    assert bench.main(["--startup", "10,4", "--search-seeds", "0,1", "--retrain-seeds", "1"]) == 0
    assert "made on 'another VM'" in capsys.readouterr().err  # the new rows' host is named
    assert asked == [(10, 0, True, 8), (4, 0, False, 8), (10, 1, True, 8), (4, 1, False, 8)]
    record = json.loads((tmp_path / "search_startup.json").read_text())
    assert sorted((r["startup"], r["search_seed"]) for r in record["rows"]) == [(4, 0), (4, 1), (10, 0), (10, 1)]
    # Another reference, trial count or retrain count would pair unlike searches: refused, nothing run.
    before = len(asked)
    assert bench.main(["--startup", "4,2", "--search-seeds", "2", "--retrain-seeds", "1"]) == 2
    assert bench.main(["--startup", "10,4", "--search-seeds", "2", "--retrain-seeds", "1", "--trials", "12"]) == 2
    assert bench.main(["--startup", "0", "--search-seeds", "2"]) == 2 and len(asked) == before
    # Measured with other CPU numerics: refused, nothing run; --other-host extends it and names both hosts.
    here = json.loads((tmp_path / "search_startup.json").read_text())["hardware"]
    assert "another VM | extended on " in here and "CPU numerics" in here
    (tmp_path / "search_startup.json").write_text(json.dumps({**record, "hardware": "x86_64, 2 CPU cores, CPU numerics 0000000000 (AVX2)"}))
    assert bench.main(["--startup", "10,4", "--search-seeds", "2", "--retrain-seeds", "1"]) == 2 and len(asked) == before
    assert "CPU numerics 0000000000" in capsys.readouterr().err
    assert bench.main(["--startup", "10,4", "--search-seeds", "2", "--retrain-seeds", "1", "--other-host"]) == 0 and len(asked) == before + 2
    assert json.loads((tmp_path / "search_startup.json").read_text())["hardware"].startswith("x86_64, 2 CPU cores, CPU numerics 0000000000 (AVX2) | extended on ")
