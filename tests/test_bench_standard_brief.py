"""bench/standard_brief.py: variants of the standard brief schedule, paired by seed."""

import argparse
import dataclasses

import pytest

from bench.standard_brief import _key, main, table, variant_schedule
from nas_kd.config import get_preset


def test_a_variant_is_the_standard_brief_schedule_with_its_changes_and_nothing_rescaled():
    base = get_preset("standard").brief
    v = variant_schedule("crop=0,batch_size=512")
    assert (v.crop, v.batch_size, v.lr, v.epochs) == (False, 512, base.lr, base.epochs)
    assert variant_schedule("") == base
    full = get_preset("standard").full
    assert variant_schedule("crop=0", "full") == dataclasses.replace(full, crop=False)


def test_a_run_is_kept_under_its_schedule_not_its_spelling():
    args = argparse.Namespace(student="small", mode="full", schedule="brief")
    assert _key("batch_size=512,crop=0", 1, args) == _key("crop=0, batch_size=512", 1, args) != _key("crop=0,batch_size=512", 2, args)
    assert _key("crop=0", 1, args) != _key("crop=0", 1, argparse.Namespace(student="small", mode="kd", schedule="brief"))
    # The final retrain's schedule is another schedule: its runs never stand in for brief ones.
    assert _key("crop=0", 1, args) != _key("crop=0", 1, argparse.Namespace(student="small", mode="full", schedule="full"))


@pytest.fixture(autouse=True)
def filled(monkeypatch):
    """The parent's cache fills (`_shared_caches`), recorded instead of run: a real one reads all
    54,000 training images through the teacher (see the test that fills one for real)."""
    import bench.standard_brief as sb

    fills = []

    def fake_fill(variant, args, path):
        fills.append(variant)
        path.write_text(variant)

    monkeypatch.setattr(sb, "_fill_cache", fake_fill)
    return fills


def run(variant, seed, acc=None):
    r = {"variant": variant, "seed": seed, "steps": 633, "train_seconds": 10.0}
    return r | ({"val_accuracy": acc} if acc is not None else {"diverged": "distillation loss became nan"})


class InlinePool:
    """The bench's process pool, run in this process so a test's fake trainer is the one called."""

    def __init__(self, *a, **k):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def submit(self, fn, *a, **k):
        import concurrent.futures as cf

        f = cf.Future()
        f.set_result(fn(*a, **k))
        return f


def test_the_table_pairs_each_variant_with_the_first_on_the_same_seeds_and_shows_a_divergence():
    runs = [run("a", 0, 0.90), run("a", 1, 0.88), run("a", 2, 0.89), run("b", 0, 0.91), run("b", 1, 0.90), run("b", 2, None)]
    lines = table(runs, ["a", "b"])
    b = next(line for line in lines if line.startswith("| `b`"))
    # b minus a on seeds 0 and 1 only (seed 2 diverged): +1.00 and +2.00 points
    assert "91.00, 90.00, diverged" in b and "+1.50" in b and "(n=2)" in b
    flipped = table(runs, ["b", "a"])  # the reference is the first variant
    assert "-1.50" in next(line for line in flipped if line.startswith("| `a`"))


@pytest.mark.parametrize("argv", [["--variants", "crop=2"], ["--variants", "epochs=1;warmup=1"], ["--seeds", "one"]])
def test_bad_arguments_are_refused_in_one_line_before_anything_trains(argv, capsys, monkeypatch):
    import bench.standard_brief as sb

    monkeypatch.setattr(sb, "_train", lambda *a: pytest.fail("trained despite bad arguments"))
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--no-write"])
    assert exit_.value.code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_kept_runs_are_not_trained_again_and_no_write_leaves_docs_alone(tmp_path, capsys, monkeypatch):
    import json

    import bench.standard_brief as sb

    args = argparse.Namespace(student="large", mode="full", schedule="brief")
    record = {"runs": {_key(v, s, args): run(v, s, 0.9) | {"student": "ir c16", "macs": 2e6, "mode": "full"} for v in ("crop=0", "crop=1") for s in (0, 1)}}
    results = tmp_path / "standard_brief.json"
    results.write_text(json.dumps(record))
    monkeypatch.setattr(sb, "RESULTS", results)
    monkeypatch.setattr(sb, "_train", lambda *a: pytest.fail("trained a kept run"))
    monkeypatch.setattr("bench._report.write_section", lambda *a, **k: pytest.fail("wrote docs with --no-write"))
    main(["--student", "large", "--variants", "crop=0;crop=1", "--seeds", "0,1", "--mode", "full", "--no-write"])
    out = capsys.readouterr().out
    assert "2.00M-MAC student, mode full" in out and "| `crop=1` | 633 | 90.00, 90.00 | 90.00 | +0.00 [+0.00, +0.00] (n=2) | 10 |" in out
    assert json.loads(results.read_text()) == record
    assert sb.section_name("small") == "standard-brief-cpu" and sb.section_name("large") == "standard-brief-cpu-large"
    assert sb.section_name("small", "full") == "standard-full-cpu" == sb.section_name("small", "full", "full")
    assert sb.section_name("small", "full", "ce") == "standard-full-cpu-ce"


def test_the_teacher_recipe_is_a_schedule_of_its_own():
    import bench.standard_brief as sb

    teacher = get_preset("standard").teacher
    assert variant_schedule("crop=0", "teacher") == dataclasses.replace(teacher, crop=False)
    args = argparse.Namespace(student="small", mode="full", schedule="teacher", arch="resnet20")
    assert _key("crop=0", 0, args) != _key("crop=0", 0, argparse.Namespace(**{**vars(args), "arch": "wrn-16-4"}))
    assert _key("crop=0", 0, args).startswith("teacher:resnet20|")
    assert sb.section_name("resnet20", "teacher") == "standard-teacher-cpu" and sb.section_name("wrn-16-4", "teacher") == "standard-teacher-cpu-wrn-16-4"


def test_kept_teacher_runs_render_validation_paired_and_test_listed(tmp_path, capsys, monkeypatch):
    import json

    import bench.standard_brief as sb

    args = argparse.Namespace(student="small", mode="full", schedule="teacher", arch="resnet20")
    acc = {("crop=1", 0): 0.9397, ("crop=1", 1): 0.9380, ("crop=0", 0): 0.9420, ("crop=0", 1): 0.9410}
    record = {"runs": {_key(v, s, args): {"variant": v, "seed": s, "student": "resnet20", "macs": None, "mode": "teacher", "steps": None, "val_accuracy": a, "test_accuracy": a - 0.001, "train_seconds": 1800.0} for (v, s), a in acc.items()}}
    results = tmp_path / "standard_brief.json"
    results.write_text(json.dumps(record))
    monkeypatch.setattr(sb, "RESULTS", results)
    monkeypatch.setattr(sb, "_train", lambda *a: pytest.fail("trained a kept teacher"))
    main(["--schedule", "teacher", "--variants", "crop=1;crop=0", "--seeds", "0,1", "--no-write"])
    out = capsys.readouterr().out
    assert "Which teacher recipe for the standard preset? (CPU, resnet20 with the reconstruction head)" in out
    # crop=0 minus crop=1 on validation: +0.23 and +0.30 points (float rounding: +0.26)
    assert "| `crop=0` | - | 94.20, 94.10 | 94.15 | +0.26 [-0.18, +0.71]" in out and "(n=2) | 1800 |" in out
    assert "- `crop=0`: test accuracy per seed 94.10, 94.00, mean 94.05%" in out


def test_a_variant_may_name_the_mode_it_trains_in_and_is_kept_under_it():
    import bench.standard_brief as sb

    args = argparse.Namespace(student="small", mode="full", schedule="full")
    assert sb.split_variant("crop=0, mode=kd") == ("kd", "crop=0")
    assert sb.variant_mode("crop=0", "full") == "full" and sb.variant_mode("mode=ce", "full") == "ce"
    # mode= is not a schedule field: the schedule is the preset's with the other changes only.
    assert variant_schedule("mode=kd,crop=1", "full") == dataclasses.replace(get_preset("standard").full, crop=True)
    assert _key("mode=kd", 0, args) == _key("crop=0", 0, argparse.Namespace(**{**vars(args), "mode": "kd"}))
    assert _key("mode=kd", 0, args) != _key("mode=full", 0, args) == _key("", 0, args)
    assert sb.section_name("small", "full", "full", modes_compared=True) == "standard-full-cpu-modes"


def test_a_mode_with_overrides_is_its_own_variant_and_trains_with_them(tmp_path, capsys, monkeypatch):
    """``mode=full+feat=0.3`` (a weight sweep) is neither ``full`` nor another sweep point: kept
    under its own key, whatever the spelling, and trained with the override. Until 2026-12-06
    the override was dropped, so every point of a sweep read the plain mode's kept runs."""
    import json

    import bench.standard_brief as sb
    from nas_kd.distill import get_mode

    args = argparse.Namespace(student="small", mode="full", schedule="brief")
    assert sb.split_variant("mode=full+feat=0.3+desc=0.3") == ("full+desc=0.3+feat=0.3", "")
    assert _key("mode=full+feat=0.3+desc=0.3", 0, args) == _key("mode=full+desc=.30+feat=0.3", 0, args)
    assert len({_key(v, 0, args) for v in ("mode=full", "mode=full+feat=0.3", "mode=full+feat=1", "mode=full+feat=0.3+desc=0.3")}) == 4
    for bad in ("mode=full+nope=1", "mode=full+feat=-1", "mode=nomode+feat=1"):
        with pytest.raises(sb.UserError):
            sb.split_variant(bad)
    results = tmp_path / "standard_brief.json"
    results.write_text(json.dumps({"runs": {_key("mode=full", s, args): run("mode=full", s, 0.9) | {"student": "ir c8", "macs": 4.8e5, "mode": "full"} for s in (0, 1)}}))
    monkeypatch.setattr(sb, "RESULTS", results)
    trained = []

    def fake_train(variant, seed, student, mode, *rest, **_kw):
        trained.append((variant, seed, get_mode(mode).weights.feat))
        return run(variant, seed, 0.9) | {"student": "ir c8", "macs": 4.8e5, "mode": mode, "seconds": 1.0}

    monkeypatch.setattr(sb.cf, "ProcessPoolExecutor", InlinePool)
    monkeypatch.setattr(sb, "_train", fake_train)
    main(["--variants", "mode=full;mode=full+feat=0.3", "--seeds", "0,1", "--no-write"])
    assert sorted(trained) == [("mode=full+feat=0.3", 0, 0.3), ("mode=full+feat=0.3", 1, 0.3)]  # the plain runs kept
    assert "## Which loss weights for mode full? (CPU, 0.48M-MAC student, brief schedule)" in capsys.readouterr().out
    # A sweep of a knob (no weight) says which knob it sweeps.
    main(["--variants", "mode=full;mode=full+temperature=2", "--seeds", "0,1", "--no-write"])
    assert "## Which temperature for mode full? (CPU, 0.48M-MAC student, brief schedule)" in capsys.readouterr().out


def test_mode_variants_train_in_their_own_mode_and_fresh_or_fresh_before_trains_kept_runs_again(tmp_path, capsys, monkeypatch):
    import json

    import bench.standard_brief as sb

    args = argparse.Namespace(student="small", mode="full", schedule="full")
    record = {"runs": {_key(v, s, args): run(v, s, 0.9) | {"student": "ir c8", "macs": 4.8e5, "mode": sb.variant_mode(v, "full")} for v in ("mode=full", "mode=kd") for s in (0, 1)}}
    results = tmp_path / "standard_brief.json"
    results.write_text(json.dumps(record))
    monkeypatch.setattr(sb, "RESULTS", results)
    trained = []

    def fake_train(variant, seed, student, mode, *rest, **_kw):
        trained.append((variant, seed, mode, rest[-1]))
        return run(variant, seed, 0.95 if mode == "kd" else 0.9) | {"student": "ir c8", "macs": 4.8e5, "mode": mode, "seconds": 1.0}

    monkeypatch.setattr(sb.cf, "ProcessPoolExecutor", InlinePool)
    monkeypatch.setattr(sb, "_train", fake_train)
    main(["--schedule", "full", "--variants", "mode=full;mode=kd", "--seeds", "0,1", "--no-write"])
    assert trained == []  # all kept
    main(["--schedule", "full", "--variants", "mode=full;mode=kd", "--seeds", "0,1", "--no-write", "--fresh"])
    assert sorted((v, s, m) for v, s, m, _ in trained) == [("mode=full", 0, "full"), ("mode=full", 1, "full"), ("mode=kd", 0, "kd"), ("mode=kd", 1, "kd")]
    assert all(rev for *_, rev in trained)  # each run is told the code revision it records
    out = capsys.readouterr().out
    assert "Which mode for the standard preset? (CPU, 0.48M-MAC student, full schedule)" in out
    assert "| `mode=kd` | 633 | 95.00, 95.00 | 95.00 | +5.00 [+5.00, +5.00] (n=2) | 10 |" in out
    # --fresh-before: only kept runs trained before that commit (or with no revision) train again.
    import bench._report as report

    record = {"runs": {_key(v, s, args): run(v, s, 0.9) | {"student": "ir c8", "macs": 4.8e5, "mode": sb.variant_mode(v, "full"), "revision": rev} for (v, s), rev in {("mode=full", 0): "new", ("mode=full", 1): None, ("mode=kd", 0): "old+dirty", ("mode=kd", 1): "new+dirty"}.items()}}
    results.write_text(json.dumps(record))
    monkeypatch.setattr(report, "resolve_commit", lambda rev, root=None: {"fix": "f1x"}.get(rev))
    monkeypatch.setattr(report, "trained_since", lambda revision, commit, root=None: commit == "f1x" and (revision or "").startswith("new"))
    trained.clear()
    main(["--schedule", "full", "--variants", "mode=full;mode=kd", "--seeds", "0,1", "--no-write", "--fresh-before", "fix"])
    assert sorted((v, s) for v, s, *_ in trained) == [("mode=full", 1), ("mode=kd", 0)]
    trained.clear()
    with pytest.raises(SystemExit) as refused:
        main(["--schedule", "full", "--variants", "mode=full;mode=kd", "--seeds", "0,1", "--no-write", "--fresh-before", "nofix"])
    assert refused.value.code == 2 and trained == [] and "names no commit" in capsys.readouterr().err


def test_a_finished_run_is_kept_beside_the_runs_another_bench_kept_in_the_file_meanwhile(tmp_path, monkeypatch):
    import json

    import bench._report as report
    import bench.standard_brief as sb

    args = argparse.Namespace(student="small", mode="full", schedule="brief")
    results = tmp_path / "standard_brief.json"
    results.write_text(json.dumps({"runs": {_key("crop=1", 0, args): run("crop=1", 0, 0.9) | {"student": "ir c8", "macs": 4.8e5, "mode": "full", "seconds": 1.0}}}))
    monkeypatch.setattr(sb, "RESULTS", results)
    monkeypatch.setattr(report, "write_section", lambda name, body: None)

    def fake_train(variant, seed, student, mode, *rest, **_kw):
        # Another bench (other seeds) keeps a run in the same file while this one trains.
        report.keep_run(results, "other|question|7", {"variant": "x", "seed": 7})
        return run(variant, seed, 0.91) | {"student": "ir c8", "macs": 4.8e5, "mode": mode, "seconds": 1.0}

    monkeypatch.setattr(sb.cf, "ProcessPoolExecutor", InlinePool)
    monkeypatch.setattr(sb, "_train", fake_train)
    main(["--variants", "crop=1;crop=0", "--seeds", "0"])
    runs = json.loads(results.read_text())["runs"]
    assert set(runs) == {_key("crop=1", 0, args), _key("crop=0", 0, args), "other|question|7"}


def test_kept_only_trains_nothing_and_tables_the_seeds_each_variant_has(tmp_path, capsys, monkeypatch):
    """A variant stopped after one seed (it lost by points there) stays in the table with what it
    has, beside a variant with three: --kept-only writes that table without training the rest."""
    import json

    import bench.standard_brief as sb

    args = argparse.Namespace(student="small", mode="full", schedule="full")
    seeds = {"": (0, 1, 2), "batch_size=512,lr=0.4": (0, 1, 2), "batch_size=1024,lr=0.4": (0,)}
    record = {"runs": {_key(v, s, args): run(v, s, 0.9 - 0.01 * i) | {"student": "ir c8", "macs": 4.8e5, "mode": "full"} for i, (v, ss) in enumerate(seeds.items()) for s in ss}}
    results = tmp_path / "standard_brief.json"
    results.write_text(json.dumps(record))
    monkeypatch.setattr(sb, "RESULTS", results)
    monkeypatch.setattr(sb, "_train", lambda *a: pytest.fail("--kept-only trained a run"))
    main(["--schedule", "full", "--variants", ";".join(seeds), "--seeds", "0,1,2", "--no-write", "--kept-only"])
    out = capsys.readouterr().out
    assert "| `batch_size=512,lr=0.4` | 633 | 89.00, 89.00, 89.00 | 89.00 | -1.00 [-1.00, -1.00] (n=3) |" in out
    assert "| `batch_size=1024,lr=0.4` | 633 | 88.00 | 88.00 | -2.00 (n=1) |" in out


def test_a_bf16_variant_is_kept_apart_and_trains_under_the_cpus_bf16_autocast(monkeypatch):
    """``numerics=bf16`` is no schedule field and no mode: the schedule stays the variant's, the
    key gains the numerics (an fp32 run's key stays as it was), and the run itself trains with
    `nas_kd.device.autocast` handing the CPU bfloat16 autocast, switched off again for an fp32
    run in the same (reused) pool process."""
    import torch

    import bench.standard_brief as sb
    import nas_kd.device as device

    monkeypatch.setattr(device, "_CPU_BF16", False)  # restored after the test whatever it leaves
    cpu = torch.device("cpu")
    args = argparse.Namespace(student="small", mode="full", schedule="brief")
    assert sb.split_variant("numerics=bf16, crop=0") == (None, "crop=0") and variant_schedule("numerics=bf16") == get_preset("standard").brief
    assert sb.variant_numerics("numerics=bf16,mode=kd") == "bf16" and sb.variant_numerics("mode=kd") == sb.variant_numerics("numerics=fp32") == "fp32"
    assert _key("numerics=bf16", 0, args) != _key("", 0, args) == _key("numerics=fp32", 0, args)
    assert _key("", 0, args) == "small|full|" + _key("", 0, args).split("|", 2)[2]  # the key of the runs kept before numerics= existed
    assert sb.section_name("large", "brief", "full", bf16=True) == "standard-brief-cpu-large-bf16"
    with pytest.raises(sb.UserError, match="numerics=fp16 is not one of fp32, bf16"):
        sb.variant_numerics("numerics=fp16")
    seen = []

    def fake_load_splits(*a, **k):  # the run's first step after setting its numerics
        seen.append(isinstance(device.autocast(cpu), torch.autocast))
        raise RuntimeError("stop here")

    import nas_kd.data

    monkeypatch.setattr(nas_kd.data, "load_splits", fake_load_splits)
    for variant in ("numerics=bf16", ""):
        with pytest.raises(RuntimeError, match="stop here"):
            sb._train(variant, 0, "small", "kd", None)
    assert seen == [True, False] and not isinstance(device.autocast(cpu), torch.autocast)


def test_runs_that_read_the_same_teacher_outputs_share_one_fill(tmp_path, monkeypatch, filled):
    """The parent fills a teacher cache once per distinct content (`cache_identity`) and hands
    its file to every run that reads it: loss weights, seeds and batch sizes share; another
    training subset, a mode that reads other outputs, crops (the teacher live), ce (no teacher)
    and bf16 numerics (filled under their own autocast) do not."""
    import json

    import bench.standard_brief as sb

    monkeypatch.setattr(sb, "RESULTS", tmp_path / "standard_brief.json")
    monkeypatch.setattr(sb.cf, "ProcessPoolExecutor", InlinePool)
    given = {}

    def fake_train(variant, seed, student, mode, *rest, cache_file=None):
        given[(variant, seed)] = cache_file and (cache_file, open(cache_file).read())
        return run(variant, seed, 0.9) | {"student": "ir c8", "macs": 4.8e5, "mode": mode, "seconds": 1.0}

    monkeypatch.setattr(sb, "_train", fake_train)
    variants = ["mode=full", "mode=full+feat=0.3,batch_size=512", "mode=kd", "mode=full,train_subset=1000", "mode=full+desc=0", "mode=full,crop=1", "mode=ce", "mode=full,numerics=bf16"]
    main(["--variants", ";".join(variants), "--seeds", "0,1", "--no-write"])
    assert filled == ["mode=full", "mode=kd", "mode=full,train_subset=1000", "mode=full+desc=0"]
    files = {v: given[(v, 0)] for v in variants}
    assert all(given[(v, 1)] == files[v] for v in variants)  # every seed the same file
    assert files["mode=full"] == files["mode=full+feat=0.3,batch_size=512"] and files["mode=full"][1] == "mode=full"
    assert len({files[v] for v in variants[:5]}) == 4
    assert files["mode=full,crop=1"] is None and files["mode=ce"] is None and files["mode=full,numerics=bf16"] is None
    assert not list(tmp_path.glob("*.pt")) and json.loads((tmp_path / "standard_brief.json").read_text() if (tmp_path / "standard_brief.json").exists() else "{}") == {}


def test_a_run_on_the_parents_cache_trains_bit_for_bit_as_one_that_fills_its_own(tmp_path, monkeypatch):
    """On real data and the shipped teacher (a few hundred images, one epoch): the cache the
    parent fills, opened by the run, gives the run that fills its own, to the last bit. (On so few
    images the accuracy would match even when the runs differ in the last bits: the product's test,
    tests/test_distill_shared_cache.py, compares every epoch's losses.)"""
    import bench.standard_brief as sb
    from nas_kd.data import load_splits
    from nas_kd.device import torch_threads

    try:
        load_splits("fashion-mnist", None, seed=0, train_subset=600)
    except Exception as e:  # noqa: BLE001 (any reason the real files are missing)
        pytest.skip(f"no Fashion-MNIST here: {e}")
    monkeypatch.undo()  # the real fill
    variant = "mode=full,train_subset=600,epochs=1,batch_size=100"
    args = argparse.Namespace(student="small", mode="full", schedule="brief", data_dir=None)
    path = tmp_path / "cache.pt"
    with torch_threads(2):  # as the parent fills it, on every core (here two); each run has one
        sb._fill_cache(variant, args, path)
    alone = sb._train(variant, 3, "small", "full", None)
    shared = sb._train(variant, 3, "small", "full", None, cache_file=str(path))
    assert shared.pop("shared_cache") == "opened"
    assert shared["teacher_seconds"] < 0.02 * alone["teacher_seconds"]  # read, not filled again
    for key in ("val_accuracy", "history"):
        assert shared[key] == alone[key]
    # A file of other outputs is refused by its fingerprint, and the run fills its own.
    other = tmp_path / "other.pt"
    sb._fill_cache("mode=full,train_subset=500,epochs=1,batch_size=100", args, other)
    refused = sb._train(variant, 3, "small", "full", None, cache_file=str(other))
    assert "another teacher or other training data" in refused["shared_cache"] and refused["val_accuracy"] == alone["val_accuracy"]
