"""bench.search_vs_ce: the recorded searches' winners against the uniform baseline trained with ce."""

from __future__ import annotations

import json

import pytest

import bench.search_vs_ce as vs


def _row(search_seed: int, winner: dict[int, float], kd: dict[int, float], arm: str = "off", same: bool = False) -> dict:
    uniform = "ir uniform"
    return {
        "prune": arm,
        "search_seed": search_seed,
        "winner": {"describe": uniform if same else f"ir w{search_seed}", "macs": 1_900_000, "search_val_accuracy": 0.8, "test_by_seed": {str(s): v for s, v in winner.items()}},
        "baseline": {"describe": uniform, "macs": 1_920_000, "test_by_seed": {str(s): v for s, v in kd.items()}},
    }


KD = {1: 0.880, 2: 0.890, 3: 0.884, 4: 0.886}


@pytest.fixture
def results(tmp_path, monkeypatch):
    rows = [
        _row(0, {1: 0.900, 2: 0.910, 3: 0.905}, {s: KD[s] for s in (1, 2, 3)}),
        _row(1, {2: 0.895, 3: 0.890, 4: 0.900}, {s: KD[s] for s in (2, 3, 4)}),
        _row(2, {3: KD[3], 4: KD[4], 5: 0.887}, {3: KD[3], 4: KD[4], 5: 0.887}, same=True),
        _row(0, {1: 0.5, 2: 0.5, 3: 0.5}, {s: KD[s] for s in (1, 2, 3)}, arm="on"),  # another arm: never read
    ]
    (tmp_path / "search_prune.json").write_text(json.dumps({"rows": rows}))
    monkeypatch.setattr(vs, "RESULTS_DIR", tmp_path)
    return tmp_path


def test_only_the_shipped_arm_is_read_in_search_seed_order(results):
    rows = vs.shipped_rows("2M", results)
    assert [r["search_seed"] for r in rows] == [0, 1, 2] and all(r["prune"] == "off" for r in rows)


def test_the_gain_splits_into_the_searchs_part_and_distillations(results):
    ce = {1: 0.870, 2: 0.872, 3: 0.880, 4: 0.878, 5: 0.881}
    a = vs.analyse(vs.shipped_rows("2M", results), ce)
    by = {p["search_seed"]: p for p in a["per_search"]}
    assert by[0]["winner_test"] == pytest.approx((0.900 + 0.910 + 0.905) / 3)
    assert by[1]["uniform_ce_test"] == pytest.approx((0.872 + 0.880 + 0.878) / 3)
    assert by[2]["is_baseline"] and not by[0]["is_baseline"]
    # Paired by search seed, and the parts add up to the whole for every search.
    every = a["all"]
    assert every["winner_minus_ce"].seeds == (0, 1, 2)
    for s in (0, 1, 2):
        whole = by[s]["winner_test"] - by[s]["uniform_ce_test"]
        assert every["winner_minus_ce"].differences[s] == pytest.approx(whole)
        assert every["search_part"].differences[s] + every["distillation_part"].differences[s] == pytest.approx(whole)
    # kd - ce of the uniform member pairs the distinct retrain seeds (seed 3 once, not three times).
    # Search 1 shares seeds 2 and 3 with search 0 and is left out of the independent interval; search 2 shares 3.
    assert a["disjoint_searches"] == [0] and all(d.seeds == (0,) for d in a["disjoint"].values())
    k = a["kd_minus_ce_by_retrain_seed"]
    assert k.seeds == (1, 2, 3, 4, 5) and k.differences[0] == pytest.approx(0.880 - 0.870)


def test_a_search_without_every_ce_seed_is_left_out(results):
    a = vs.analyse(vs.shipped_rows("2M", results), {1: 0.87, 2: 0.87, 3: 0.88, 4: 0.88})  # seed 5 missing
    assert [p["search_seed"] for p in a["per_search"]] == [0, 1]


def test_two_kd_results_for_one_seed_are_refused(results):
    rows = vs.shipped_rows("2M", results)
    rows[1]["baseline"]["test_by_seed"]["2"] = 0.1
    with pytest.raises(SystemExit, match="two kd results for seed 2"):
        vs.recorded_kd(rows)


def test_a_check_that_differs_from_the_record_refuses_before_any_ce_run(results, monkeypatch):
    """The kd check pairs today's runs with the record's: a difference stops the bench before it
    trains ce or writes anything."""
    calls = []

    def fake_train(budget, mode, seeds, log=print):
        calls.append(mode)
        return "ir uniform", {s: KD[s] + 0.001 for s in seeds}

    monkeypatch.setattr(vs, "_train_uniform", fake_train)
    monkeypatch.setattr(vs, "RESULTS", results / "search_vs_ce.json")
    with pytest.raises(SystemExit, match="--allow-mismatch"):
        vs.main(["--budget", "2M"])
    assert calls == ["kd"] and not (results / "search_vs_ce.json").exists()


def test_the_section_shows_each_budget_its_parts_and_the_check(results):
    ce = {1: 0.870, 2: 0.872, 3: 0.880, 4: 0.878, 5: 0.881}
    record = {"commands": ["python -m bench.search_vs_ce --budget 2M"], "dates": ["2026-12-07"], "hardware": "test box", "budgets": {"2M": {"uniform": "ir uniform", "ce_by_seed": {str(s): v for s, v in ce.items()}, "check": {"seeds": [1], "today": [0.88], "recorded": [0.88], "match": True}}}}
    text = vs.render(record)
    a = vs.analyse(vs.shipped_rows("2M", results), ce)
    assert f"| 2M | 1 of 3 (search seeds 0) | {100 * a['disjoint']['winner_minus_ce'].mean:+.2f} (one seed) |" in text and "500k" not in text
    assert f"2M, all 3 searches: what a user gains {100 * a['all']['winner_minus_ce'].mean:+.2f} [" in text
    assert "88.00% against the record's 88.00% (identical" in text
    assert "| 2 | the uniform baseline | 1.90M | 88.57 | 88.57 | 87.97 |" in text


def test_the_searches_own_ce_runs_are_used_and_only_missing_seeds_trained(results, monkeypatch):
    rows = vs.shipped_rows("2M", results)
    rows[1]["baseline"]["ce_test_by_seed"] = {"2": 0.872, "3": 0.880, "4": 0.878}  # search 1 recorded its own
    (results / "search_prune.json").write_text(json.dumps({"rows": rows}))
    assert vs.ce_runs(rows, {1: 0.87}) == {1: 0.87, 2: 0.872, 3: 0.880, 4: 0.878}
    with pytest.raises(SystemExit, match="seed 3: .* not the same run"):
        vs.ce_runs(rows, {3: 0.881})
    trained = []

    def fake_train(budget, mode, seeds, log=print):
        trained.append((mode, list(seeds)))
        return "ir uniform", {s: (KD.get(s, 0.887) if mode == "kd" else 0.86) for s in seeds}

    monkeypatch.setattr(vs, "_train_uniform", fake_train)
    monkeypatch.setattr(vs, "RESULTS", results / "search_vs_ce.json")
    monkeypatch.setattr(vs, "write_section", lambda *a: None)
    assert vs.main(["--budget", "2M"]) == 0
    assert trained == [("kd", [1]), ("ce", [1, 5])]  # 2, 3, 4 come from search 1
    again = json.loads((results / "search_vs_ce.json").read_text())["budgets"]["2M"]["ce_by_seed"]
    assert again == {"1": 0.86, "5": 0.86}
