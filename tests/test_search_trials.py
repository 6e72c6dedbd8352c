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
