"""bench.search_prune: pruning on against off, paired by search seed; the 'on' arm imported."""

from __future__ import annotations

import json

import bench.search_prune as bench
from bench._report import hardware


def _row(seed: int, winner: float, baseline: float, **key) -> dict:
    return {
        **key,
        "trials": 8,
        "search_seed": seed,
        "wall_seconds": 10.0,
        "winner": {"describe": f"w{seed}", "macs": 1, "search_val_accuracy": 0.8, "test_by_seed": {str(seed + 1): winner}},
        "baseline": {"describe": "base", "macs": 1, "test_by_seed": {str(seed + 1): baseline}},
    }


def test_off_reaches_the_search_and_is_paired_with_the_imported_on_arm(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bench, "RESULTS", tmp_path / "search_prune.json")
    monkeypatch.setattr(bench, "write_section", lambda *a, **k: None)
    monkeypatch.chdir(tmp_path)  # runs/ of the imported searches: absent here
    startup = tmp_path / "search_startup.json"
    source = {"commands": ["s"], "dates": ["d"], "hardware": hardware(), "budget": "2M", "trials": 8, "startup": [10, 4], "retrain_seeds": 1,
              "rows": [_row(0, 0.90, 0.89, startup=10), _row(0, 0.95, 0.89, startup=4), _row(1, 0.88, 0.89, startup=10)]}
    startup.write_text(json.dumps(source))
    asked = []

    def fake_run_one(opts, log=print):
        asked.append((opts.prune, opts.seed, opts.baselines))
        report = {"bench_seconds": 1.0, "trials": [{"state": "COMPLETE"}] * 8,
                  "winner": {"describe": "w", "macs": 1, "search_val_accuracy": 0.8, "retrain_runs": [{"seed": opts.seed + 1, "test_accuracy": 0.91}]}}
        return report

    monkeypatch.setattr(bench, "run_one", fake_run_one)
    assert bench.main(["--arms", "off", "--search-seeds", "0,1", "--retrain-seeds", "1", "--reference-from", str(startup)]) == 0
    assert asked == [(False, 0, False), (False, 1, False)]  # pruning off; the imported rows bring the baselines
    record = json.loads(bench.RESULTS.read_text())
    assert sorted((r["prune"], r["search_seed"]) for r in record["rows"]) == [("off", 0), ("off", 1), ("on", 0), ("on", 1)]
    assert all(r["finished"] == 8 for r in record["rows"] if r["prune"] == "off")
    a = bench.analyse(record["rows"])
    # off minus on per search seed: 0.91 - 0.90 and 0.91 - 0.88 (the start-up-4 row is not the reference).
    assert abs(a["off_minus_on"]["mean"] - 0.02) < 1e-12
    assert "Pruning off minus on" in bench.render(record)
    # A reference made with other CPU numerics is refused, nothing run; another budget too.
    startup.write_text(json.dumps({**source, "hardware": "x86_64, CPU numerics 0000000000 (AVX2)"}))
    assert bench.main(["--arms", "off", "--search-seeds", "2", "--retrain-seeds", "1", "--reference-from", str(startup)]) == 2
    startup.write_text(json.dumps({**source, "budget": "500k"}))
    assert bench.main(["--arms", "off", "--search-seeds", "2", "--retrain-seeds", "1", "--reference-from", str(startup)]) == 2
    assert bench.main(["--arms", "maybe"]) == 2 and len(asked) == 2
    assert "would not pair" in capsys.readouterr().err
