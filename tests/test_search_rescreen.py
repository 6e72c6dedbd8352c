"""bench.search_rescreen: --rescreen 0 against 3, paired by search seed; the '3' arm imported."""

from __future__ import annotations

import json

import bench.search_rescreen as bench
from bench._report import hardware


def _row(seed: int, winner: float, baseline: float, describe: str = "", **key) -> dict:
    return {
        **key,
        "trials": 8,
        "search_seed": seed,
        "wall_seconds": 10.0,
        "finished": 8,
        "winner": {"describe": describe or f"w{seed}", "macs": 1, "search_val_accuracy": 0.8, "test_by_seed": {str(seed + 1): winner}},
        "baseline": {"describe": "base", "macs": 1, "test_by_seed": {str(seed + 1): baseline}},
    }


def test_rescreen_zero_reaches_the_search_and_is_paired_with_the_imported_arm(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bench, "RESULTS", tmp_path / "search_rescreen.json")
    monkeypatch.setattr(bench, "write_section", lambda *a, **k: None)
    prune = tmp_path / "search_prune.json"
    source = {"commands": ["(arm 'on' from x)", "p"], "dates": ["d"], "hardware": hardware(), "budget": "2M", "trials": 8, "retrain_seeds": 1,
              "rows": [_row(0, 0.90, 0.89, prune="off"), _row(0, 0.95, 0.89, prune="on"), _row(1, 0.88, 0.89, prune="off")]}
    prune.write_text(json.dumps(source))
    asked = []

    def fake_run_one(opts, log=print):
        asked.append((opts.rescreen, opts.prune, opts.seed, opts.baselines))
        return {"bench_seconds": 1.0, "trials": [{"state": "COMPLETE"}] * 8,
                "winner": {"describe": "w0", "macs": 1, "search_val_accuracy": 0.8, "retrain_runs": [{"seed": opts.seed + 1, "test_accuracy": 0.91}]}}

    monkeypatch.setattr(bench, "run_one", fake_run_one)
    assert bench.main(["--arms", "0", "--search-seeds", "0,1", "--retrain-seeds", "1", "--reference-from", str(prune)]) == 0
    assert asked == [(0, False, 0, False), (0, False, 1, False)]  # no re-screen, no pruning; the imported rows bring the baselines
    record = json.loads(bench.RESULTS.read_text())
    assert sorted((r["rescreen"], r["search_seed"]) for r in record["rows"]) == [("0", 0), ("0", 1), ("3", 0), ("3", 1)]
    a = bench.analyse(record["rows"])
    # 0 minus 3 per search seed: 0.91 - 0.90 and 0.91 - 0.88 (the pruning-on row is not the reference).
    assert abs(a["minus_reference"]["0"]["mean"] - 0.02) < 1e-12
    text = bench.render(record)
    assert "`--rescreen 0` minus `--rescreen 3`" in text and "the same winner in 1 of 2 searches" in text
    # A reference made with other CPU numerics is refused, nothing run; another budget too.
    prune.write_text(json.dumps({**source, "hardware": "x86_64, CPU numerics 0000000000 (AVX2)"}))
    assert bench.main(["--arms", "0", "--search-seeds", "2", "--retrain-seeds", "1", "--reference-from", str(prune)]) == 2
    prune.write_text(json.dumps({**source, "budget": "500k"}))
    assert bench.main(["--arms", "0", "--search-seeds", "2", "--retrain-seeds", "1", "--reference-from", str(prune)]) == 2
    assert bench.main(["--arms", "none"]) == 2 and len(asked) == 2
    assert "would not pair" in capsys.readouterr().err
