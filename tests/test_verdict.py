"""The verdict sentence on fabricated per-seed results, checked against hand-computed intervals."""

from nas_kd.verdict import compare_runs, verdict_sentence


def runs(accs, seeds=(1, 2, 3)):
    return {"runs": [{"seed": s, "test_accuracy": a} for s, a in zip(seeds, accs, strict=True)]}


WINNER = {"macs": 1_370_364, "mode": "full", "test_mean": 0.81, **runs([0.80, 0.81, 0.82])}
BASELINES = {"macs": 1_920_000, "modes": {"full": runs([0.83, 0.835, 0.845]), "ce": runs([0.79, 0.815, 0.81])}}


def test_worse_and_no_difference_by_hand():
    # vs full: differences -0.03, -0.025, -0.025; mean -0.026667, sd 0.0028868, half = 4.302653 * sd / sqrt(3) = 0.0071711
    # vs ce: differences 0.01, -0.005, 0.01; mean 0.005, sd 0.0086603, half = 0.0215131
    text = verdict_sentence(WINNER, BASELINES, compare_runs(WINNER, BASELINES["modes"]))
    assert text == (
        "Over 3 paired seeds, the searched student (1.37M MACs, mode full) is worse than the uniform baseline (1.92M MACs) "
        "in mode full by 2.67 points (95% CI -3.38 to -1.95) and not detectably different from the same baseline in mode ce "
        "(+0.50 points, 95% CI -1.65 to +2.65)."
    )


def test_better_and_cut_short():
    base = {"macs": 2_000_000, "modes": {"ce": runs([0.70, 0.71, 0.69])}}
    text = verdict_sentence(WINNER, base, compare_runs(WINNER, base["modes"]), cut_short="3 of 8 requested candidates finished; stopped")
    # differences 0.10, 0.10, 0.13: mean 0.11, sd 0.017321, half 0.043027
    assert text == (
        "Search cut short (3 of 8 requested candidates finished; stopped): over 3 paired seeds, the searched student "
        "(1.37M MACs, mode full) is better than the uniform baseline (2.00M MACs) in mode ce by 11.00 points (95% CI +6.70 to +15.30)."
    )


def test_one_seed_and_no_baseline():
    w = {"macs": 500_000, "mode": "kd", "test_mean": 0.9, **runs([0.9], seeds=(1,))}
    base = {"macs": 480_000, "modes": {"kd": runs([0.88], seeds=(1,))}}
    assert "On one seed" in (text := verdict_sentence(w, base, compare_runs(w, base["modes"]))) and "(one seed: no interval, so no verdict)" in text
    assert "no baseline was trained" in verdict_sentence(w, None, {})


def test_a_winner_that_is_the_baseline_is_named_as_such():
    cfg = {"block": "inverted_residual", "stem_width": 8, "stages": []}
    w = {"macs": 480_000, "mode": "kd", "test_mean": 0.8757, "config": cfg, **runs([0.87, 0.88, 0.8771])}
    base = {"macs": 480_000, "config": dict(cfg), "modes": {"kd": runs([0.87, 0.88, 0.8771]), "ce": runs([0.86, 0.87, 0.87])}}
    text = verdict_sentence(w, base, compare_runs(w, base["modes"]))
    assert text.startswith("The search's answer is the uniform baseline itself (480.00k MACs, mode kd, 87.57% test)")
    # What distillation bought is still said: the same student against its plain-ce runs.
    assert text.endswith("): no searched student beat it on the re-screen's full-schedule validation score. Over 3 paired seeds it is better than the same student in mode ce by 0.90 points (95% CI +0.49 to +1.32).")
    other = {**w, "config": {**cfg, "stem_width": 16}}
    assert "is not detectably different" in verdict_sentence(other, base, compare_runs(other, base["modes"]))


def test_runs_are_paired_by_seed_not_by_their_order():
    """A parallel retrain records runs as they finish, so two students' runs can be listed in
    different orders: the differences pair seed with seed."""
    shuffled = runs([0.845, 0.83, 0.835], seeds=(3, 1, 2))  # BASELINES' full runs, listed 3, 1, 2
    d = compare_runs(WINNER, {"full": shuffled})["full"]
    assert d.seeds == (1, 2, 3) and [round(x, 6) for x in d.differences] == [-0.03, -0.025, -0.025]


def test_two_seeds_are_paired_seeds_with_an_interval():
    """Two seeds are the fewest that give an interval (t with 1 degree of freedom, 12.71): the
    sentence says "over 2 paired seeds", not "on one seed"."""
    w = {"macs": 500_000, "mode": "kd", "test_mean": 0.905, **runs([0.90, 0.91], seeds=(1, 2))}
    base = {"macs": 480_000, "modes": {"kd": runs([0.88, 0.90], seeds=(1, 2))}}
    # differences 0.02, 0.01: mean 0.015, sd 0.0070711, half = 12.7062 * sd / sqrt(2) = 0.063531
    assert verdict_sentence(w, base, compare_runs(w, base["modes"])) == (
        "Over 2 paired seeds, the searched student (500.00k MACs, mode kd) is not detectably different from the uniform baseline "
        "(480.00k MACs) in mode kd (+1.50 points, 95% CI -4.85 to +7.85)."
    )
