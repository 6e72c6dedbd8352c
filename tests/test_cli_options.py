"""Each command's options reach what the command calls, spelt as given (nas_kd.commands.*).

The end-to-end command tests (test_cli_search, test_cli_distill, ...) run with a few options
each; here every option is given a value other than its default and the call that does the work
is replaced by a recorder, so an option read into the wrong field, or not passed on, fails."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from nas_kd.models.teachers import build_teacher, save_teacher
from nas_kd.plan import SearchOptions

MBV2 = str(Path(__file__).resolve().parent.parent / "search_spaces" / "mbv2.yaml")


def _record_search(monkeypatch, report="report.md"):
    import nas_kd.search

    seen = []

    def run_search(opts, *, log, finish):
        seen.append((opts, finish))
        return {"study": opts.study, "storage": opts.storage, "report": report, "verdict": None}

    monkeypatch.setattr(nas_kd.search, "run_search", run_search)
    return seen


def test_search_without_options_runs_the_documented_defaults(cli, monkeypatch):
    seen = _record_search(monkeypatch)
    code, _, err = cli("search")
    assert code == 0, err
    assert seen == [(SearchOptions(), True)]


def test_every_search_option_reaches_the_search(cli, monkeypatch):
    seen = _record_search(monkeypatch)
    expected = SearchOptions(
        budget="params:200k",
        precision="fp32",
        space="tiny",
        dataset="synthetic",
        data_dir="some/data",
        teacher="wrn-16-4",
        teacher_recon=True,
        mode="ksanc",
        loss_weights="kd=0.7",
        trials=17,
        timeout=12.5,
        study="s1",
        storage="sqlite:///x.db",
        sampler="nsga2",
        objectives="accuracy,macs",
        preset="standard",
        seed=5,
        retrain_seeds=2,
        baselines=False,
        device="cpu",
        progress=False,
        heartbeat=7,
        min_fill=0.5,
        rescreen=4,
        startup_trials=3,
        prune=True,
        prune_from_epoch=2,
        teacher_seed=6,
        jobs=3,
        gpu_step="bf16=0",
        brief="epochs=2",
        full="lr=0.1",
    )
    code, _, err = cli(
        "search", "--budget", "params:200k", "--precision", "fp32", "--space", "tiny", "--dataset", "synthetic", "--data-dir", "some/data",
        "--teacher", "wrn-16-4", "--teacher-recon", "--mode", "ksanc", "--loss-weights", "kd=0.7", "--trials", "17", "--timeout", "12.5",
        "--study", "s1", "--storage", "sqlite:///x.db", "--sampler", "nsga2", "--objectives", "accuracy,macs", "--preset", "standard",
        "--seed", "5", "--retrain-seeds", "2", "--no-baselines", "--device", "cpu", "--no-progress", "--heartbeat", "7", "--min-fill", "0.5",
        "--rescreen", "4", "--startup-trials", "3", "--prune", "--prune-from-epoch", "2", "--teacher-seed", "6", "--jobs", "3", "--gpu-step", "bf16=0",
        "--brief", "epochs=2", "--full", "lr=0.1", "--no-finalize",
    )  # fmt: skip
    assert code == 0, err
    assert seen == [(expected, False)]
    assert [f.name for f in dataclasses.fields(SearchOptions) if getattr(expected, f.name) == getattr(SearchOptions(), f.name)] == []  # every field given


def test_a_search_left_unfinished_writes_its_partial_report_and_says_how_to_finish(cli, monkeypatch):
    import nas_kd.report
    import nas_kd.study

    _record_search(monkeypatch, report=None)
    written = []
    monkeypatch.setattr(nas_kd.study, "load_study", lambda name, storage: SimpleNamespace(name=name, storage=storage))
    monkeypatch.setattr(nas_kd.report, "write_report", lambda study, partial: written.append((study, partial)) or {"report.md": Path("runs/s2/report.md")})
    code, out, err = cli("search", "--study", "s2", "--storage", "sqlite:///y.db", "--no-finalize")
    assert code == 0, err
    assert written == [(SimpleNamespace(name="s2", storage="sqlite:///y.db"), True)]
    assert f"search: partial report {Path('runs/s2/report.md')} (run 'nas-kd finalize --study s2' later)" in out


def _record_training(monkeypatch):
    import nas_kd.distill

    seen = []

    def train(student, teacher, splits, schedule, mode, **kwargs):
        seen.append(SimpleNamespace(student=student, teacher=teacher, splits=splits, schedule=schedule, mode=mode, **kwargs))
        return {"val_accuracy": 0.25, "test_accuracy": 0.5, "train_seconds": 1.0, "images_per_second": 1.0}

    monkeypatch.setattr(nas_kd.distill, "train", train)
    return seen


def _initial_weights(student) -> list[torch.Tensor]:
    return [p.detach().clone() for p in student.parameters()]


def test_distill_options_reach_the_training(cli, in_tmp, monkeypatch):
    from nas_kd.config import get_preset
    from nas_kd.space import SearchSpace

    seen = _record_training(monkeypatch)
    common = ["--space", MBV2, "--uniform", "2", "--dataset", "synthetic", "--mode", "ce", "--loss-weights", "ce=0.5", "--device", "cpu"]
    code, out, err = cli("distill", *common, "--epochs", "3", "--lr", "0.02", "--train-subset", "100", "--seed", "4", "--preset", "standard", "--no-progress")
    assert code == 0, err
    run = seen[0]
    assert run.schedule == dataclasses.replace(get_preset("standard").full, epochs=3, lr=0.02, train_subset=100)
    assert run.mode.name == "ce" and run.mode.weights.ce == 0.5 and run.teacher is None
    assert run.seed == 4 and run.device == torch.device("cpu") and run.show_progress is False and run.evaluate_test is True
    assert run.student.config == SearchSpace.load(MBV2).uniform(2) and len(run.splits.train.y) == 100
    assert "val accuracy:  0.2500" in out and "test accuracy: 0.5000" in out

    # --train-subset 0 is the whole training split; the student's initial weights follow --seed.
    for seed in ("4", "4", "5"):
        assert cli("distill", *common, "--epochs", "1", "--train-subset", "0", "--seed", seed, "--preset", "quick")[0] == 0
    assert seen[1].schedule.train_subset is None and len(seen[1].splits.train.y) > 100
    first, again, other = (_initial_weights(run.student) for run in seen[1:])
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True)) and not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))


def test_distill_holds_out_the_teachers_validation_split(cli, in_tmp, monkeypatch):
    """The split is drawn with the seed the teacher was trained with (its file says which), so the
    student is selected on images the teacher never trained on, whatever --teacher-seed says."""
    from nas_kd.data import load_splits

    meta = {"dataset": "synthetic", "num_classes": 10, "input_shape": [1, 16, 16], "arch": "resnet8", "reconstruction": False, "seed": 3}
    teacher = save_teacher(in_tmp / "t.pt", build_teacher("resnet8", 1, 10), meta)
    seen = _record_training(monkeypatch)
    code, out, err = cli("distill", "--space", MBV2, "--uniform", "0", "--dataset", "synthetic", "--mode", "kd", "--teacher", teacher, "--teacher-seed", "0", "--device", "cpu")
    assert code == 0, err
    assert f"teacher: resnet8 ({teacher})" in out and seen[0].teacher is not None
    assert torch.equal(seen[0].splits.val.x, load_splits("synthetic", seed=3).val.x)
    assert not torch.equal(seen[0].splits.val.x, load_splits("synthetic", seed=0).val.x)


def test_teacher_options_reach_the_teachers_training(cli, in_tmp, monkeypatch):
    import nas_kd.models.teachers
    from nas_kd.config import get_preset

    seen = []

    def ensure_teacher(dataset, arch, schedule, **kwargs):
        seen.append(SimpleNamespace(dataset=dataset, arch=arch, schedule=schedule, **kwargs))
        return None, {"arch": arch, "test_accuracy": 0.5, "val_accuracy": 0.25}, Path("t.pt")

    monkeypatch.setattr(nas_kd.models.teachers, "ensure_teacher", ensure_teacher)
    code, out, err = cli(
        "teacher", "--dataset", "synthetic", "--data-dir", "d", "--arch", "wrn-10-2", "--preset", "standard", "--seed", "7", "--device", "cpu",
        "--epochs", "3", "--batch-size", "32", "--lr", "0.3", "--train-subset", "99", "--reconstruction", "--root", "cache",
    )  # fmt: skip
    assert code == 0, err
    run = seen[0]
    assert (run.dataset, run.arch, run.preset, run.seed, run.device, run.data_dir, run.reconstruction, run.root) == ("synthetic", "wrn-10-2", "standard", 7, torch.device("cpu"), "d", True, "cache")
    assert run.schedule == dataclasses.replace(get_preset("standard").teacher, epochs=3, batch_size=32, lr=0.3, train_subset=99)
    assert out == "t.pt  arch=wrn-10-2  test_accuracy=0.5000  val_accuracy=0.2500\n"
    assert cli("teacher", "--dataset", "synthetic", "--train-subset", "0", "--device", "cpu")[0] == 0
    assert seen[1].schedule == dataclasses.replace(get_preset("quick").teacher, train_subset=None) and seen[1].arch == "resnet20"
    # Another spelling of a standard dataset trains (and caches) the teacher a search under its own name finds.
    assert cli("teacher", "--dataset", "Fashion_MNIST", "--device", "cpu")[0] == 0
    assert seen[2].dataset == "fashion-mnist"


def _record_finalize(monkeypatch, plan):
    import nas_kd.plan
    import nas_kd.search
    import nas_kd.study

    seen = []
    monkeypatch.setattr(nas_kd.study, "load_study", lambda name, storage: (name, storage))
    monkeypatch.setattr(nas_kd.plan, "plan_of", lambda study: plan)
    monkeypatch.setattr(nas_kd.search, "finish_study", lambda *a, **k: seen.append((a, k)) or {"verdict": "a verdict"})
    return seen


def test_finalize_options_reach_the_retrain(cli, monkeypatch):
    seen = _record_finalize(monkeypatch, SimpleNamespace(step=SimpleNamespace(mps=False), jobs=1, device="cpu"))
    code, out, err = cli("finalize", "--study", "s", "--storage", "sqlite:///z.db", "--retrain-seeds", "4", "--no-baselines", "--device", "cpu", "--jobs", "2", "--progress")
    assert code == 0, err
    (args, kwargs), = seen
    assert args == ("s", "sqlite:///z.db") and {k: v for k, v in kwargs.items() if k != "log"} == dict(retrain_seeds=4, baselines=False, device="cpu", jobs=2, show_progress=True)
    assert out.endswith("verdict: a verdict\n")
    # Left out, each is the search's (None tells finish_study so).
    assert cli("finalize", "--study", "s")[0] == 0
    assert {k: v for k, v in seen[1][1].items() if k != "log"} == dict(retrain_seeds=None, baselines=None, device=None, jobs=None, show_progress=None)


@pytest.mark.parametrize("jobs", ["0", "-1"])
def test_finalize_refuses_fewer_than_one_job_before_opening_the_study(cli, monkeypatch, jobs):
    seen = _record_finalize(monkeypatch, None)  # a plan of None would fail if it were read
    code, _, err = cli("finalize", "--study", "s", "--jobs", jobs)
    assert code == 2 and err == f"nas-kd: error: --jobs must be at least 1 (runs trained at once), got {jobs}\n" and seen == []


def test_finalize_shares_the_device_as_the_search_did(cli, monkeypatch):
    """The retrain runs the search's --jobs processes under its mps switch unless told otherwise."""
    import nas_kd.mps

    _record_finalize(monkeypatch, SimpleNamespace(step=SimpleNamespace(mps=True), jobs=3, device="cuda"))
    shared = []

    class Sharing:
        def __init__(self, *args):
            shared.append(args[:3] + args[4:])

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(nas_kd.mps, "device_sharing", Sharing)
    assert cli("finalize", "--study", "s")[0] == 0
    assert cli("finalize", "--study", "s", "--jobs", "2", "--device", "cpu")[0] == 0
    assert shared == [(True, 3, "cuda", "finalize"), (True, 2, "cpu", "finalize")]


def test_export_options_reach_the_export(cli, monkeypatch):
    import nas_kd.export

    seen = []
    monkeypatch.setattr(nas_kd.export, "export_study", lambda study, storage, log: seen.append((study, storage)))
    assert cli("export", "--study", "s", "--storage", "sqlite:///e.db")[0] == 0
    assert cli("export", "--study", "t")[0] == 0
    assert seen == [("s", "sqlite:///e.db"), ("t", None)]


def test_data_info_follows_its_fraction_and_seed(cli):
    from nas_kd.data import load_splits

    code, out, err = cli("data", "info", "--dataset", "synthetic", "--val-fraction", "0.25", "--seed", "2")
    assert code == 0, err
    s = load_splits("synthetic", val_fraction=0.25, seed=2)
    assert f"train:       {len(s.train.y)}\n" in out and f"val:         {len(s.val.y)}  (stratified, seed 2; train + val = {len(s.train.y) + len(s.val.y)})\n" in out
    assert f"mean/std:    {s.mean[0]:.4f} / {s.std[0]:.4f}\n" in out and "flip aug:    no\n" in out and "input shape: 1x16x16\n" in out
    assert f"{load_splits('synthetic', val_fraction=0.25, seed=3).mean[0]:.4f}" != f"{s.mean[0]:.4f}"  # the line tells the seeds apart
