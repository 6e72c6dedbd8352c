"""`bench.distill`: the paired statistics it prints are the hand-computed ones, the screen picks on
validation, and a rerun resumes (trains nothing it has) - on fabricated rows and one tiny real run."""

from __future__ import annotations

import json

import pytest

from bench import distill


def _row(student, mode, seed, test, val=None, disc=None):
    history = [{"epoch": 1, "val_accuracy": 0.5, "disc_accuracy": disc or {}, "adv_gate": {}}]
    return {"student": student, "mode": mode, "seed": seed, "schedule": {"epochs": 1}, "teacher_sha256": "x", "test_acc": test, "val_acc": val if val is not None else test, "train_seconds": 1.0, "history": history}


ROWS = [
    _row("small", "ce", 0, 90.0), _row("small", "ce", 1, 90.4), _row("small", "ce", 2, 90.2),
    _row("small", "kd", 0, 90.8), _row("small", "kd", 1, 91.1), _row("small", "kd", 2, 90.9),
    _row("small", "full", 0, 90.5, disc={"adv_feat": 0.7}), _row("small", "full", 1, 90.2, disc={"adv_feat": 0.9}), _row("small", "full", 2, 90.9, disc={"adv_feat": 0.8}),
]  # fmt: skip


def test_paired_table_shows_the_hand_computed_mean_and_t_interval():
    table = distill.paired_table(ROWS, ["ce", "kd", "full"])
    # kd - ce per seed: 0.8, 0.7, 0.7 -> mean 0.7333, sd 0.05774, t(0.975, 2) = 4.3027 -> half 0.1434
    kd = next(line for line in table if line.startswith("| kd "))
    assert "+0.73 [+0.59, +0.88]" in kd and "better" in kd
    # full - ce: 0.5, -0.2, 0.7 -> mean 0.3333, sd 0.4726 -> half 1.174: the interval holds zero
    full = next(line for line in table if line.startswith("| full "))
    assert "+0.33 [-0.84, +1.51]" in full and "no detectable difference" in full


def test_goal_lines_compare_kd_with_ce_and_full_with_kd():
    lines = distill.goal_lines(ROWS)
    assert lines[0].startswith("- `kd` vs `ce`: +0.73") and "**met**" in lines[0]
    # full - kd: -0.3, -0.9, 0.0 -> mean -0.4: missed
    assert lines[1].startswith("- `full` vs `kd`: -0.40") and "**missed**" in lines[1]


def test_curves_average_the_discriminator_accuracy_over_seeds():
    curves = distill.curve_table(ROWS, ["ce", "kd", "full"])
    assert any(line.startswith("| full | adv_feat | 0.80") for line in curves)
    assert not any(line.startswith("| kd ") for line in curves)  # no discriminator, no row


def test_a_run_is_identified_by_student_mode_seed_schedule_and_teacher():
    run = distill.Run("small", "kd", 1, {"epochs": 1}, "x")
    assert run.matches(ROWS[4])
    assert not distill.Run("small", "kd", 1, {"epochs": 2}, "x").matches(ROWS[4])
    assert not distill.Run("small", "kd", 1, {"epochs": 1}, "other teacher").matches(ROWS[4])


@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory):
    from nas_kd.cli import main

    root = tmp_path_factory.mktemp("teacher")
    assert main(["teacher", "--dataset", "synthetic", "--arch", "resnet8", "--preset", "quick", "--reconstruction", "--epochs", "1", "--train-subset", "256", "--root", str(root)]) == 0
    return next(root.glob("*.pt"))


def test_the_screen_picks_on_validation_and_a_rerun_trains_nothing(tmp_path, tiny_teacher, monkeypatch):
    args = ["--dataset", "synthetic", "--teacher", str(tiny_teacher), "--students", "small", "--modes", "ce,best", "--seeds", "0", "--epochs", "1", "--train-subset", "128"]
    args += ["--screen", "xu,ktan", "--results-dir", str(tmp_path), "--markdown", str(tmp_path / "B.md")]
    assert distill.main(args) == 0
    screened = json.loads((tmp_path / "distill_screen.json").read_text())
    best = max(screened, key=lambda r: r["val_acc"])["mode"]
    rows = json.loads((tmp_path / "distill.json").read_text())
    assert sorted(r["mode"] for r in rows) == sorted(["ce", best])
    assert {"student", "mode", "seed", "test_acc"} <= set(rows[0])
    assert f"`best` = **{best}**" in (tmp_path / "B.md").read_text()

    def no_training(*a, **k):
        raise AssertionError("a rerun trained a run it already had")

    monkeypatch.setattr(distill, "train_run", no_training)
    assert distill.main(args) == 0
    assert json.loads((tmp_path / "distill.json").read_text()) == rows
