"""A whole `nas-kd search` on synthetic data: trials, final retrain, report, export, resume."""

import csv
import json
import os
import statistics
from pathlib import Path

import pytest
import torch

from nas_kd.config import Schedule, parse_budget
from nas_kd.cost import analytic_cost
from nas_kd.space import SearchSpace

TINY_SPACE = """\
name: tiny
block: inverted_residual
stem: {width: [4, 8], kernel: 3, stride: 1}
stages:
  - {stride: 2, depth: [1, 2], width: [8, 16], expand: [1, 3]}
  - {stride: 2, depth: [1], width: [16, 32], kernel: [3, 5]}
"""
SHAPE, CLASSES = (1, 16, 16), 10
STUDY = "tinytest"
# The quick preset's teacher schedule takes minutes; a one-epoch teacher passed by path keeps the
# test to seconds and exercises --teacher PATH.
TINY_TEACHER = Schedule(epochs=1, batch_size=64, lr=0.05, warmup_epochs=0.0, train_subset=512)


def _budget(space: SearchSpace) -> int:
    """Between the cheapest and the dearest member, and above the smallest uniform member, so
    that some candidates are rejected and the baseline exists."""
    lo = analytic_cost(space.smallest(), SHAPE, CLASSES).macs
    hi = analytic_cost(space.largest(), SHAPE, CLASSES).macs
    return max(analytic_cost(space.uniform(0), SHAPE, CLASSES).macs, (lo + hi) // 2)


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """Run the search once in an empty folder; tests read what it left."""
    from nas_kd.cli import main
    from nas_kd.models.teachers import ensure_teacher

    root = tmp_path_factory.mktemp("search")
    old = os.getcwd()
    os.chdir(root)
    try:
        Path("tiny.yaml").write_text(TINY_SPACE)
        budget = _budget(SearchSpace.load("tiny.yaml"))
        _, _, teacher = ensure_teacher("synthetic", "resnet8", TINY_TEACHER, preset="test", device=torch.device("cpu"), log=lambda *_: None)
        args = ["search", "--dataset", "synthetic", "--teacher", str(teacher), "--space", "tiny.yaml", "--budget", str(budget), "--trials", "4", "--retrain-seeds", "1", "--mode", "kd", "--study", STUDY, "--preset", "quick", "--device", "cpu", "--rescreen", "3"]  # the re-screen path (quick skips it by default)
        code = main(args)
        yield {"root": root, "code": code, "args": args, "budget": budget, "run": root / "runs" / STUDY}
    finally:
        os.chdir(old)


def _csv(run: Path) -> list[dict]:
    with open(run / "trials.csv") as f:
        return list(csv.DictReader(f))


def test_search_leaves_report_plot_and_export(searched):
    assert searched["code"] == 0
    run = searched["run"]
    for name in ("config.json", "study.db", "report.md", "report.json", "trials.csv", "pareto.png", "final/final.json", "final/winner.pt"):
        assert (run / name).is_file(), name
    for name in ("student.pt", "arch.json", "student.ts", "student.onnx", "parity.json"):
        assert (run / "export" / name).is_file(), name
    assert (run / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    config = json.loads((run / "config.json").read_text())
    assert config["trials"] == 4 and config["preset"]["name"] == "quick" and config["preset"]["brief"]["epochs"] >= 1
    assert config["teacher"]["sha256"] and config["space"]["yaml"] == TINY_SPACE
    # the plan in config.json is the one stored with the study, and it round-trips exactly
    from nas_kd.plan import SearchPlan, plan_of
    from nas_kd.study import load_study

    plan = plan_of(load_study("tinytest"))
    assert SearchPlan.from_dict(config) == plan and plan.to_dict() == config
    assert plan.seeds.search not in plan.seeds.retrain


def test_report_numbers_match_the_trials(searched):
    run, budget = searched["run"], searched["budget"]
    report = json.loads((run / "report.json").read_text())
    rows = _csv(run)
    assert not report["partial"] and len(rows) == len(report["trials"]) == sum(report["trials_by_state"].values())
    trained = [r for r in rows if r["state"] in ("COMPLETE", "PRUNED", "FAIL")]
    assert len(trained) == 4
    assert all(int(r["macs"]) > budget for r in rows if r["state"] == "INFEASIBLE")
    assert all(int(r["macs"]) <= budget for r in rows if r["state"] == "COMPLETE")
    w = report["winner"]
    assert w["macs"] <= budget and parse_budget(str(budget)).fits(w["macs"], w["params"])
    row = next(r for r in rows if int(r["number"]) == w["trial"])
    assert row["state"] == "COMPLETE" and float(row["val_accuracy"]) == pytest.approx(w["search_val_accuracy"])
    assert int(row["macs"]) == w["macs"] and int(row["params"]) == w["params"]
    # the winner is the best full-schedule re-screen among the brief run's top 3 (--rescreen 3)
    brief = sorted((float(r["val_accuracy"]) for r in rows if r["state"] == "COMPLETE"), reverse=True)
    rescreened = report["rescreen"]
    assert sorted((r["brief_val_accuracy"] for r in rescreened), reverse=True) == pytest.approx(brief[: len(rescreened)]) and len(rescreened) == min(3, len(brief))
    assert w["trial"] == max(rescreened, key=lambda r: (r["rescreen_val_accuracy"], -r["macs"], -r["trial"]))["trial"]  # ties: fewer MACs, earlier trial
    assert "## Re-screen" in (run / "report.md").read_text()
    assert w["thop_macs"] > 0
    tests = [r["test_accuracy"] for r in w["retrain_runs"]]
    assert len(tests) == 1 and w["test_mean"] == pytest.approx(statistics.fmean(tests))
    assert set(report["baselines"]["modes"]) == {"ce", "kd"} and report["baselines"]["macs"] <= budget
    md = (run / "report.md").read_text()
    for text in (f"Trial {w['trial']}", "MACs (thop)", "test accuracy", "uniform", "nas-kd search", "resnet8", "±"):
        assert text in md, text


def test_same_command_resumes_and_finishes_at_once(searched, capsys):
    from nas_kd.cli import main
    from nas_kd.study import load_study

    run = searched["run"]
    before = len(_csv(run))
    stamp = (run / "final" / "final.json").stat().st_mtime_ns
    old = os.getcwd()
    os.chdir(searched["root"])
    try:
        capsys.readouterr()
        assert main(searched["args"]) == 0
        out = capsys.readouterr().out
        study = load_study(STUDY)
    finally:
        os.chdir(old)
    assert "nothing to run" in out and f"study {STUDY} is finalized" in out
    assert len(study.trials) == before == len(_csv(run))
    assert (run / "final" / "final.json").stat().st_mtime_ns == stamp  # no retrain either


def test_other_settings_refuse_to_join(searched, capsys):
    from nas_kd.cli import main

    old = os.getcwd()
    os.chdir(searched["root"])
    try:
        args = list(searched["args"])
        args[args.index("--mode") + 1] = "ce"
        assert main(args) == 2
    finally:
        os.chdir(old)
    err = capsys.readouterr().err
    assert "mode='kd (ce=0.5, kd=0.5" in err and "--study" in err and err.count("\n") == 1


def test_exported_student_rebuilds_without_the_study(searched):
    from nas_kd.export import PARITY_TOLERANCE, load_exported

    export = searched["run"] / "export"
    model, arch = load_exported(export)
    assert arch["num_classes"] == CLASSES and tuple(arch["input_shape"]) == SHAPE and arch["dataset"] == "synthetic"
    assert len(arch["normalisation"]["mean"]) == 1
    pixels = torch.randint(0, 256, (3, *SHAPE), dtype=torch.uint8)  # the graphs take raw pixels
    mean, std = (torch.tensor(arch["normalisation"][k]).view(1, -1, 1, 1) for k in ("mean", "std"))
    scripted = torch.jit.load(str(export / "student.ts"))
    with torch.no_grad():
        assert (model((pixels / 255 - mean) / std) - scripted(pixels)).abs().max() < PARITY_TOLERANCE
    parity = json.loads((export / "parity.json").read_text())
    assert all(isinstance(v, float) and v < PARITY_TOLERANCE for v in parity["max_abs_diff"].values())
    assert parity["images"] >= 200 and parity["images_source"].startswith("synthetic validation split")
