"""bench.full_schedule: variants at equal steps, students within the budget, paired analysis."""

import dataclasses

import pytest

from bench.full_schedule import against_baseline, analyse, main, pick, render, variant_schedule
from nas_kd.config import get_preset, parse_budget
from nas_kd.cost import analytic_macs
from nas_kd.space import SearchSpace


def test_a_variant_keeps_the_steps_of_warm_up_and_changes_only_epochs_and_subset():
    base = get_preset("quick").full
    same = variant_schedule(base, f"{base.epochs}x{base.train_subset}")
    assert same == base
    once = variant_schedule(base, "1x48000")
    assert (once.epochs, once.train_subset, once.batch_size, once.lr) == (1, 48000, base.batch_size, base.lr)
    steps = lambda s: s.warmup_epochs * s.train_subset / s.batch_size  # noqa: E731
    assert steps(once) == pytest.approx(steps(base))
    assert variant_schedule(base, "2x24000@0.05") == dataclasses.replace(base, lr=0.05)
    for bad in ("48000", "0x48000", "1x10", "2x", "2x24000@0", "2x24000@x", "2x24000@1.2.3"):
        with pytest.raises(ValueError):
            variant_schedule(base, bad)


def test_students_are_the_baseline_then_distinct_members_filling_the_budget():
    space, budget = SearchSpace.load("search_spaces/mbv2.yaml"), parse_budget("2M")
    students = pick(space, budget, (1, 28, 28), 10, 4, seed=0)
    assert students[0] == ("baseline", space.baseline(budget, (1, 28, 28), 10))
    configs = [c.to_json() for _, c in students]
    assert len(students) == 4 and len(set(configs)) == 4
    assert all(0.85 * budget.macs <= analytic_macs(c, (1, 28, 28), 10) <= budget.macs for _, c in students[1:])
    assert pick(space, budget, (1, 28, 28), 10, 4, seed=0) == students  # seeded


def _rows():
    # Variant b is 0.5 points better on every (student, seed) than a, though students differ by 3 points.
    rows = []
    for student, level in (("baseline", 88.0), ("random 1", 91.0)):
        for seed, noise in ((1, 0.0), (2, 0.4), (3, -0.3)):
            rows.append({"variant": "a", "student": student, "seed": seed, "val_acc": level + noise, "test_acc": level + noise, "train_seconds": 30.0})
            rows.append({"variant": "b", "student": student, "seed": seed, "val_acc": level + noise + 0.5, "test_acc": level + noise + 0.5, "train_seconds": 31.0})
    return rows


def test_the_difference_is_paired_by_student_and_seed():
    a = analyse(_rows(), ["a", "b"])
    diff = a["versus"]["b"]["val_acc"]
    # Paired: exactly +0.5 with no spread; unpaired, the students' 3 points would swamp it.
    assert diff["mean"] == pytest.approx(0.005) and diff["low"] == pytest.approx(0.005) and diff["high"] == pytest.approx(0.005)
    assert a["per_variant"]["a"]["runs"] == 6
    record = {"commands": ["c"], "dates": ["d"], "hardware": "h", "budget": "2M", "batch_size": 128, "lr": 0.1, "variants": ["a", "b"], "seeds": [1, 2, 3], "rows": _rows(),
              "students": {"baseline": {"describe": "u", "macs": 1.9e6}, "random 1": {"describe": "r", "macs": 1.8e6}}}
    text = render(record)
    assert "+0.50 [+0.50, +0.50] (better)" in text and "| baseline: `u` | 1.90M |" in text
    # Against the baseline, paired by seed: random 1 is 3 points above it on every seed.
    versus = against_baseline(_rows(), "random 1", "a")
    assert versus["val_acc"]["mean"] == pytest.approx(0.03) and versus["val_acc"]["low"] == pytest.approx(0.03)
    assert against_baseline(_rows(), "baseline", "a") is None and "+3.00 [+3.00, +3.00] (better)" in text


def test_a_bad_variant_is_refused_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "full.json"
    assert main(["--variants", "2x24000,48000", "--results", str(out)]) == 2
    assert "EPOCHSxSUBSET" in capsys.readouterr().err and not out.exists()


def test_random_members_against_the_baseline_per_seed_keep_the_baselines_noise():
    """Per seed (only those every student ran), the members' mean minus the baseline's run on
    that seed: a baseline run that is low on one seed moves every member's difference together."""
    from bench.full_schedule import members_by_seed

    def row(student, seed, acc):
        return {"variant": "v", "student": student, "seed": seed, "val_acc": acc, "test_acc": acc}

    rows = [row("baseline", 1, 88.0), row("baseline", 2, 90.0), row("baseline", 3, 89.0)]
    rows += [row(m, s, 89.0 + d) for m, d in (("a", 0.0), ("b", 1.0)) for s in (1, 2, 3)]
    rows += [row("baseline", 4, 80.0), row("a", 4, 89.0)]  # seed 4: b never ran it, so it is left out
    d = members_by_seed(rows, "v", "test_acc")
    assert list(d["seeds"]) == [1, 2, 3] and [round(x, 6) for x in d["differences"]] == [0.015, -0.005, 0.005]
