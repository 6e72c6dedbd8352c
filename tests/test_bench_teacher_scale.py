"""bench.teacher_scale's table and its refusals (the runs themselves are the bench's: ~40 s each)."""

import pytest

from bench import teacher_scale as ts


def _runs(tree: str, accuracy: dict[tuple[str, float, int], float | None]) -> dict:
    out = {}
    for (mode, scale, seed), acc in accuracy.items():
        run = {"mode": mode, "scale": scale, "seed": seed, "student": "ir c8"}
        out[ts._key(tree, mode, scale, seed)] = run | ({"val_accuracy": acc} if acc is not None else {"diverged": "loss became nan"})
    return out


def test_table_pairs_each_scale_with_c1_by_seed_and_counts_divergences():
    runs = _runs(ts.CURRENT, {("full", 1.0, 0): 0.80, ("full", 1.0, 1): 0.70, ("full", 0.1, 0): 0.79, ("full", 0.1, 1): 0.71})
    runs |= _runs("abc123", {("full", 1.0, 0): 0.80, ("full", 1.0, 1): 0.70, ("full", 0.1, 0): 0.50, ("full", 0.1, 1): None})
    rows = ts.table(runs, ["full"], [1.0, 0.1], [0, 1], "abc123")
    assert len(rows) == 4
    c1, small = rows[2].split("|"), rows[3].split("|")
    assert c1[3].strip() == "75.00" and c1[4].strip() == "-"
    # current: 79 - 80 and 71 - 70 -> mean 0 over 2 seeds; baseline: one seed (50 - 80), one diverged
    assert small[4].strip().startswith("+0.00 [") and small[4].strip().endswith("(n=2)")
    assert small[6].strip() == "50.00" and small[7].strip() == "-30.00 (n=1)" and small[8].strip() == "1"
    assert small[9].strip() == "+29.00 (n=1)"  # current minus baseline on the seed both finished


def test_table_without_a_baseline_has_the_current_columns_only():
    runs = _runs(ts.CURRENT, {("ksanc", 1.0, 0): 0.8, ("ksanc", 10.0, 0): 0.8})
    rows = ts.table(runs, ["ksanc"], [1.0, 10.0], [0], None)
    assert "current minus baseline" not in rows[0] and rows[3].split("|")[4].strip() == "+0.00 (n=1)"


@pytest.mark.parametrize("argv", [["--scales", "0.1,10"], ["--scales", "1,-1"], ["--seeds", "a"], ["--scales", "1", "--baseline", "no-such-revision"]])
def test_bad_arguments_exit_2_before_any_run(argv, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(ts, "RESULTS", tmp_path / "teacher_scale.json")
    monkeypatch.setattr(ts, "_in_tree", lambda *a: pytest.fail("a run started"))
    with pytest.raises(SystemExit) as e:
        ts.main([*argv, "--no-write"])
    assert e.value.code == 2 and len(capsys.readouterr().err.strip().splitlines()) == 1


def test_runs_of_another_presets_schedule_are_kept_apart():
    assert ts._key(ts.CURRENT, "full", 1.0, 0, "standard") != ts._key(ts.CURRENT, "full", 1.0, 0) == ts._key(ts.CURRENT, "full", 1.0, 0, "quick")
    runs = _runs(ts.CURRENT, {("full", 1.0, 0): 0.8})
    assert ts.table(runs, ["full"], [1.0], [0], None, "standard")[2].split("|")[3].strip() == "-"


def test_a_finished_run_is_kept_beside_the_runs_another_bench_kept_in_the_file_meanwhile(tmp_path, monkeypatch):
    import json

    import bench._report as report

    results = tmp_path / "teacher_scale.json"
    monkeypatch.setattr(ts, "RESULTS", results)
    monkeypatch.setattr(report, "write_section", lambda name, body: None)

    def fake_in_tree(tree, items, data_dir, preset="quick"):
        report.keep_run(results, "other|question", {"mode": "kd", "scale": 1.0, "seed": 9})  # another bench, meanwhile
        return [{"mode": m, "scale": s, "seed": k, "student": "ir c8", "val_accuracy": 0.8} for m, s, k in items]

    monkeypatch.setattr(ts, "_in_tree", fake_in_tree)
    ts.main(["--modes", "full", "--scales", "1,0.1", "--seeds", "0"])
    runs = json.loads(results.read_text())["runs"]
    assert set(runs) == {ts._key(ts.CURRENT, "full", s, 0) for s in (1.0, 0.1)} | {"other|question"}
