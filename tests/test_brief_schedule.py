"""bench.brief_schedule: the truth from full-schedule runs, the replayed search, rank agreement."""

import json
import random
import statistics

import pytest

from bench.brief_schedule import analyse, main, render, replay, truth
from nas_kd.errors import UserError

NAMES = ["baseline", *(f"random {i}" for i in range(1, 12))]
LEVEL = {n: 88.0 + 0.25 * ((i * 5) % 12) for i, n in enumerate(NAMES)}  # distinct, baseline lowest


def _reference(names=NAMES, seeds=(1, 2, 3)):
    rows = [{"variant": "2x24000", "student": n, "seed": s, "val_acc": LEVEL[n] + 0.01 * s, "test_acc": LEVEL[n] - 0.2, "train_seconds": 30.0} for n in names for s in seeds]
    return {"budget": "2M", "students": {n: {"describe": n, "config": n, "macs": 1.9e6} for n in names}, "rows": rows}


def _record(variants: dict):
    rows = [{"variant": v, "student": n, "seed": s, "val_acc": f(n, s), "train_seconds": 3.0, "steps": 62} for v, f in variants.items() for n in NAMES for s in (0, 4)]
    return {"commands": ["c"], "dates": ["d"], "hardware": "h", "budget": "2M", "truth_seeds": [1, 2, 3], "variants": list(variants), "rows": rows, "students": {n: {"describe": n, "macs": 1.9e6} for n in NAMES}}


def test_the_truth_is_every_students_full_runs_and_a_gap_names_the_command():
    full = truth(_reference(), NAMES, [1, 2, 3])
    assert full["random 1"][2] == (LEVEL["random 1"] + 0.02, LEVEL["random 1"] - 0.2)
    assert set(full["baseline"]) == {1, 2, 3}
    with pytest.raises(UserError, match="--students 12 --seeds 1,2,3,4"):
        truth(_reference(), NAMES, [1, 2, 3, 4])


def test_the_replay_rescreens_the_brief_top_three_and_the_baseline():
    judge = [88.0, 89.0, 90.0, 91.0, 92.0, 93.0, 94.0, 95.0]
    # The brief run ranks exactly backwards: its top 1 is the pool's worst non-baseline member.
    backwards = [0.0, *(100.0 - j for j in judge[1:])]
    r = replay(backwards, judge, judge, random.Random(0), pools=5)
    assert r["brief"] == pytest.approx(1.0) and r["best"] == pytest.approx(7.0)
    assert r["random"] == pytest.approx(statistics.fmean(judge) - 88.0)
    # The re-screen picks the best of the brief top 3 (members 1-3 here), not the pool's best;
    # re-screening all 7 finds it.
    assert r["rescreen"][3] == pytest.approx(3.0) and r["rescreen"][1] == pytest.approx(1.0) and r["rescreen"][7] == pytest.approx(7.0)
    # The baseline is always re-screened: brief last, re-screen best, it wins (gain 0).
    rescreen = [99.0, *judge[1:]]
    assert replay(backwards, rescreen, judge, random.Random(0), pools=5)["rescreen"][3] == pytest.approx(0.0)
    # A brief run that agrees with the truth finds the pool's best.
    assert replay(judge, judge, judge, random.Random(0), pools=5)["brief"] == pytest.approx(7.0)


def test_the_run_that_rescreens_never_judges():
    # No real differences: each student's three full runs are 88 +1, -1 and 0 in some order, val
    # and test alike. A re-screen then picks whoever was lucky on its seed; judged on the other
    # seeds that luck reverses (a loss), judged on its own run it would look like a gain.
    pattern = [(1.0, -1.0, 0.0), (-1.0, 0.0, 1.0), (0.0, 1.0, -1.0)]
    reference = _reference()
    for r in reference["rows"]:
        i = NAMES.index(r["student"])
        r["val_acc"] = r["test_acc"] = 88.0 + pattern[i % 3][r["seed"] - 1] + 0.001 * i
    record = _record({"flat": lambda n, s: 80.0 + 0.01 * NAMES.index(n)})
    gain = analyse(record, reference, [1, 2, 3], pools=50, resamples=20, replay_resamples=5)["per_variant"]["flat"]["replay"]
    assert gain["val"]["rescreen"][3] < -0.3 and gain["test"]["rescreen"][3] < -0.3


def test_a_brief_run_that_agrees_with_the_full_schedule_ranks_better_than_one_that_does_not():
    record = _record({"agrees": lambda n, s: LEVEL[n] - 10 + 0.001 * s, "reversed": lambda n, s: 100 - LEVEL[n]})
    a = analyse(record, _reference(), [1, 2, 3], pools=50, resamples=50, replay_resamples=5)
    good, bad = a["per_variant"]["agrees"], a["per_variant"]["reversed"]
    assert good["rho"] == pytest.approx(1.0) and bad["rho"] == pytest.approx(-1.0)
    assert bad["rho_minus_first_interval"][1] < 0 and "rho_minus_first" not in good
    assert bad["rescreen_minus_first"]["val"][0] < 0 and good["brief_minus_rescreen"]["val"][0] >= 0
    assert good["replay"]["val"]["brief"] == pytest.approx(good["replay"]["val"]["best"]) and bad["replay"]["test"]["brief"] < bad["replay"]["test"]["random"]
    assert a["full_single_run_rho"] == pytest.approx(1.0)
    text = render(record, _reference())
    assert "| agrees | 62 | 3.0 | 1.00, 1.00 | 1.00 [1.00, 1.00] | (reference) |" in text
    assert "| reversed | 62 | 3.0 | -1.00, -1.00 | -1.00 [-1.00, -1.00] | -2.00 [-2.00, -2.00] |" in text


def test_bad_seeds_or_a_missing_truth_are_refused_before_anything_is_written(tmp_path, capsys):
    out, ref = tmp_path / "brief.json", tmp_path / "full.json"
    ref.write_text(json.dumps(_reference()))
    assert main(["--seeds", "0,1", "--truth-seeds", "1,2,3", "--results", str(out), "--reference", str(ref)]) == 2
    assert "overlap" in capsys.readouterr().err and not out.exists()
    assert main(["--truth-seeds", "1", "--results", str(out), "--reference", str(ref)]) == 2
    assert "at least two" in capsys.readouterr().err
    assert main(["--results", str(out), "--reference", str(tmp_path / "none.json")]) == 2
    assert "bench.full_schedule" in capsys.readouterr().err and not out.exists()
    # The reference's students are not the ones this bench would pick: refused before any training.
    assert main(["--students", "3", "--results", str(out), "--reference", str(ref)]) == 2
    assert "is not full.json's 'baseline'" in capsys.readouterr().err and not out.exists()


def test_a_wider_rescreen_finds_more_when_the_brief_ranking_is_backwards():
    # Backwards brief: the best members are last, so only a re-screen wide enough reaches them.
    record = _record({"reversed": lambda n, s: 100 - LEVEL[n]})
    widths = analyse(record, _reference(), [1, 2, 3], pools=50, resamples=20, replay_resamples=5)["per_variant"]["reversed"]["replay"]["val"]["rescreen"]
    gains = [widths[k] for k in (1, 2, 3, 4, 5, 7)]
    assert gains == sorted(gains) and gains[-1] > gains[0]
    assert "| top 1 | top 2 |" in render(record, _reference())


def test_averaging_the_brief_seeds_cancels_noise_that_one_seed_keeps():
    # Each seed's run is the truth plus noise of opposite signs: one seed ranks poorly, their mean exactly.
    noise = {n: 3.0 * (((i * 7) % 12) - 5.5) for i, n in enumerate(NAMES)}
    record = _record({"noisy": lambda n, s: LEVEL[n] - 10 + (noise[n] if s == 0 else -noise[n])})
    a = analyse(record, _reference(), [1, 2, 3], pools=50, resamples=50, replay_resamples=5)["per_variant"]["noisy"]
    avg = a["averaged"]
    assert a["rho"] < 0.5 and avg["rho"] == pytest.approx(1.0)
    assert avg["rho_minus_one_seed"][1] > 0 and avg["minus_one_seed"]["val"]["brief"][0] > 0
    assert avg["replay"]["val"]["brief"] == pytest.approx(avg["replay"]["val"]["best"])
    assert "| noisy | 1.00 |" in render(record, _reference())
