"""bench.gpu_step's own rules, without training: each part of the step section is kept as it
finishes and read back by the next call, and a part, or a row of one, that fails costs only itself
(the second GPU session lost a finished breakdown and switch table to one NaN)."""

from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace

import pytest
import torch

import bench.gpu_step as gs
from nas_kd.config import Schedule
from nas_kd.device import torch_threads

SIZES = gs.StepSizes(reps=1, warmup=0, batch_sizes=(32, 64, 128), compile_backend="eager", cuda_graphs=False,
                     part_seconds=(("breakdown", 1.0), ("graph", 1.0), ("switches", 1.0), ("batch", 50.0), ("compile", 1.0)))
SCHEDULE = Schedule(epochs=1, batch_size=32, lr=0.1, warmup_epochs=0.0)
SPLITS = SimpleNamespace(train=range(640))


@pytest.fixture
def fake_parts(monkeypatch):
    """Each part replaced by a fake that counts its calls (graph and compile read the breakdown)."""
    calls = {p: 0 for p in gs.PARTS}

    def fake(part, value):
        def run(*args):
            calls[part] += 1
            return value(*args)
        return run

    monkeypatch.setattr(gs, "_breakdown", fake("breakdown", lambda b, sizes: {"seconds": {"full": 0.04}}))
    monkeypatch.setattr(gs, "_graph", fake("graph", lambda b, sizes, eager: {"graph": eager}))
    monkeypatch.setattr(gs, "_switches", fake("switches", lambda b, sizes: {"defaults": 0.04}))
    monkeypatch.setattr(gs, "_batches", fake("batch", lambda b, sizes: [{"batch_size": 32}]))
    monkeypatch.setattr(gs, "_compile", fake("compile", lambda b, sizes, eager: {"compiled": eager}))
    return calls


def measure(kept, left=lambda: float("inf"), on_kept=lambda: None):
    return gs.measure_step(SPLITS, None, None, SCHEDULE, torch.device("cpu"), SIZES, left=left, kept=kept, on_kept=on_kept)


def test_parts_are_kept_as_they_finish_and_not_measured_again(tmp_path, fake_parts):
    packed = []  # what bench.gpu would pack at each part kept: the call may be killed after any

    def on_kept():
        packed.append(sorted(p.stem for p in tmp_path.glob("*.json")))

    assert measure(tmp_path, left=lambda: 10.0, on_kept=on_kept) is None  # no time for the batch table (50 s)
    assert sorted(p.stem for p in tmp_path.glob("*.json")) == ["breakdown", "compile", "graph", "switches"]
    ended = [snap for snap in packed if not any(n.endswith(".started") for n in snap)]  # each packed as it ended
    assert ended == [["breakdown"], ["breakdown", "graph"], ["breakdown", "graph", "switches"], ["breakdown", "compile", "graph", "switches"]]
    assert len(packed) == 2 * len(ended)  # and each marked as begun, packed before it ran
    assert json.loads((tmp_path / "graph.json").read_text()) == {"graph": 0.04}
    r = measure(tmp_path, on_kept=on_kept)
    assert len(packed) == 8 + 2  # the batch table's part alone was new
    assert fake_parts == {"breakdown": 1, "graph": 1, "switches": 1, "batch": 1, "compile": 1}  # only the batch table ran again
    assert r["breakdown"] == {"seconds": {"full": 0.04}} and r["batch"] == [{"batch_size": 32}] and r["compile"] == {"compiled": 0.04}
    assert r["steps_per_brief_trial"] == 20


def test_the_parts_measure_the_product_s_defaults_whatever_ran_before(tmp_path, fake_parts, monkeypatch):
    """A search run earlier in the process (bench-gpu's jobs rows) leaves its switches configured:
    the breakdown's eager step must not be a graphed one."""
    from nas_kd.device import StepOptions, configure_step, step_options

    seen = []
    monkeypatch.setattr(gs, "_breakdown", lambda b, sizes: seen.append(step_options()) or {"seconds": {"full": 0.04}})
    configure_step(StepOptions(graph=True, bf16=False))
    try:
        measure(tmp_path)
    finally:
        configure_step(StepOptions())
    assert seen == [StepOptions()]


def test_a_part_that_killed_a_call_is_recorded_as_such_not_started_again(tmp_path, fake_parts, monkeypatch):
    """The device kills a call at its limit: a part that ran past it (a cold torch.compile, say)
    would be started again by every later call and end each the same way. A part marks its start
    (packed before it runs) and clears the mark when it ends or raises; a mark found by the next
    call means the part was killed: graph, batch and compile record that as their result, the
    breakdown and the switches (which the others read) run again."""
    packed = []

    def on_kept():
        packed.append(sorted(p.name for p in tmp_path.glob("*.json")))

    def compile_killed(b, sizes, eager):
        assert (tmp_path / f"compile{gs.STARTED}").is_file() and f"compile{gs.STARTED}" in packed[-1]  # in the pack while it runs
        raise KeyboardInterrupt  # stands for the kill: the mark stays where no finally removes it

    monkeypatch.setattr(gs, "_compile", compile_killed)
    with pytest.raises(KeyboardInterrupt):
        measure(tmp_path, on_kept=on_kept)
    # (a real kill runs no finally; an interrupt does: put the mark back as a kill leaves it)
    (tmp_path / f"compile{gs.STARTED}").write_text(json.dumps({"seconds_left": 200.0, "estimate_seconds": 150.0}))
    (tmp_path / f"breakdown{gs.STARTED}").write_text(json.dumps({"seconds_left": 300.0, "estimate_seconds": 80.0}))
    (tmp_path / "breakdown.json").unlink()
    monkeypatch.setattr(gs, "_compile", lambda *a: pytest.fail("a part that killed a call started again"))
    r = measure(tmp_path, on_kept=on_kept)
    assert r["compile"] == {"every compile variant": {"error": "killed at the call's limit in an earlier call (started with 200 s left, estimated 150 s)"}}
    assert fake_parts["breakdown"] == 2 and r["breakdown"] == {"seconds": {"full": 0.04}}  # measured again: the others read it
    assert not list(tmp_path.glob(f"*{gs.STARTED}")) and json.loads((tmp_path / "compile.json").read_text()) == r["compile"]


def test_killed_parts_render_as_failed_rows():
    killed = {"seconds_left": 200.0, "estimate_seconds": 150.0}
    r = {"batch_size": 256, "steps_per_brief_trial": 630, "breakdown": {"seconds": {"full": 0.04}, "profile": {"busy_share": None, "kernel_launches": 1, "aten_ops": 1}},
         "switches": {"seconds": {"defaults": 0.04}, "new_student_seconds": {"defaults": 1.0}},
         "graph": gs._killed("graph", killed), "compile": gs._killed("compile", killed), "batch": gs._killed("batch", killed)}
    text = "\n".join(gs.step_markdown(r))
    assert text.count("failed: killed at the call's limit in an earlier call (started with 200 s left, estimated 150 s)") == 3


def test_a_failing_part_keeps_the_parts_before_it(tmp_path, fake_parts, monkeypatch):
    def broken(b, sizes):
        raise RuntimeError("CUDA error")

    monkeypatch.setattr(gs, "_switches", broken)
    with pytest.raises(RuntimeError):
        measure(tmp_path)
    # its start mark cleared too: an error is not a kill, and the next call tries the part again
    assert sorted(p.stem for p in tmp_path.glob("*.json")) == ["breakdown", "graph"]


def test_graph_and_compile_wait_for_the_breakdown(tmp_path, fake_parts):
    sizes = dataclasses.replace(SIZES, part_seconds=(("breakdown", 99.0), ("graph", 1.0), ("switches", 1.0), ("batch", 1.0), ("compile", 1.0)))
    r = gs.measure_step(SPLITS, None, None, SCHEDULE, torch.device("cpu"), sizes, left=lambda: 10.0, kept=tmp_path)
    assert r is None and fake_parts["graph"] == 0 and fake_parts["compile"] == 0 and fake_parts["switches"] == 1


def test_the_batch_table_times_the_step_a_trial_runs_at_each_batch_and_a_failing_row_is_its_result(monkeypatch):
    """Crop-free: the teacher from one cache for every batch size (as a search's process builds
    it once); a variant whose step fails (a capture at 4x the batch) is that row's result."""
    from nas_kd.device import step_options

    built, caches = [], []

    class Cache:
        def __init__(self, teacher, loader, mode, num_classes):
            caches.append(loader.batch_size)

    monkeypatch.setattr("nas_kd.distill.TeacherCache", Cache)
    monkeypatch.setattr(gs, "_seconds_per_call", lambda fn, sizes, device: (fn(), 0.01)[1])

    class Loader(SimpleNamespace):
        def __len__(self):
            return 6400 // self.batch_size

    monkeypatch.setattr(gs, "make_loaders", lambda splits, batch_size, device, seed, crop: (Loader(batch_size=batch_size, batches=lambda: iter([SimpleNamespace(x=None, y=None, index=None, flipped=None)])), None, None))

    goal_cfg = object()

    class Bench:
        schedule, splits, teacher, device = SCHEDULE.replace(crop=False), SimpleNamespace(info=SimpleNamespace(num_classes=10)), None, torch.device("cpu")
        goal = ("2.00M-MAC", goal_cfg)

        def step(self, mode, schedule=None, cache=None, cfg=None):
            if step_options().graph and schedule.batch_size == 128:
                raise RuntimeError("out of memory in the graph's pool")
            built.append((schedule.batch_size, step_options().graph, cache is not None, mode, cfg is goal_cfg))
            return lambda x, y, index=None, flipped=None: None

    rows = gs._batches(Bench(), dataclasses.replace(SIZES, cuda_graphs=True, goal_batch_sizes=(32, 64)))
    own = [(bs, g, True, "full", False) for bs in (32, 64) for g in (False, True)] + [(128, False, True, "full", False)]
    assert caches == [32] and built == own + [(bs, g, True, m, True) for m in ("full", "kd") for bs in (32, 64) for g in (False, True)]
    assert [(r["student"], r["mode"], r["batch_size"]) for r in rows] == [(gs.SECTION_STUDENT, "full", bs) for bs in (32, 64, 128)] + [("2.00M-MAC", m, bs) for m in ("full", "kd") for bs in (32, 64)]
    assert rows[2]["graph"] == {"error": "RuntimeError: out of memory in the graph's pool"}
    assert rows[1]["eager"] == {"seconds_per_step": 0.01, "images_per_second": 6400.0, "epoch_seconds": 0.01 * 100}
    assert not step_options().graph  # the switches as they were
    md = "\n".join(gs.step_markdown({
        "batch_size": 32, "steps_per_brief_trial": 20, "breakdown": {"seconds": {"full": 0.04}, "profile": {"kernel_launches": 0, "aten_ops": 1, "busy_share": None}},
        "graph": {gs.GRAPHED: {"error": "skipped: needs CUDA"}}, "switches": {"seconds": {"defaults": 0.04}, "new_student_seconds": {"defaults": 1.5}, "errors": {"CUDA graph on": "RuntimeError: capture failed"}}, "batch": rows, "compile": {},
    }))
    assert "| the section's | full | 64 | eager | 10.00 | 6,400 | 1.00 |" in md and "| the section's | full | 128 | graph | failed: RuntimeError: out of memory" in md and "teacher cached" in md
    assert "| 2.00M-MAC | kd | 32 | graph | 10.00 | 3,200 | 2.00 |" in md
    # The goal line reads the goal student's rows only (the section's own 64-batch rows took 1.00 s).
    assert "- The 2.00M-MAC student's steady epoch, fastest: 1.00 s (full, batch 64, eager); under the goal's 0.5 s: none" in md
    fast = [*rows[:3], *({**row, "graph": {"seconds_per_step": 0.004, "images_per_second": 16000.0, "epoch_seconds": 0.4}} if row["mode"] == "kd" and row["batch_size"] == 64 else row for row in rows[3:])]
    fast_md = "\n".join(gs.step_markdown({"batch_size": 32, "steps_per_brief_trial": 20, "breakdown": {"seconds": {"full": 0.04}, "profile": {"kernel_launches": 0, "aten_ops": 1, "busy_share": None}},
                                     "graph": {}, "switches": {"seconds": {"defaults": 0.04}, "new_student_seconds": {"defaults": 1.5}}, "batch": fast, "compile": {}}))
    assert "fastest: 0.40 s (kd, batch 64, graph); under the goal's 0.5 s: kd at batch 64 graph (steps alone" in fast_md
    assert "skipped: needs CUDA" in md and "| defaults | 40.00 | 1.00 | 1.50 |" in md and "| CUDA graph on | failed: RuntimeError: capture failed |" in md


def test_a_switch_whose_step_fails_is_its_rows_result():
    """On a GPU the graph switch may fail to capture: the other switches are still measured."""
    from nas_kd.device import step_options

    class Bench:
        device = torch.device("cpu")

        def batch(self):
            return None, (torch.zeros(2), torch.zeros(2))

        def step(self, mode):
            if step_options().graph:
                raise RuntimeError("operation not permitted when stream is capturing")
            threads.append(torch.get_num_threads())
            return lambda x, y: None

    threads = []
    with torch_threads(4):
        out = gs._switches(Bench(), SIZES)
    assert out["threads"] == 4  # the thread rows below the process's own count, and no other
    assert set(out["seconds"]) == set(gs.SWITCHES) - {"CUDA graph on"} | {"1 torch thread"}
    assert threads == [4] * (len(gs.SWITCHES) - 1) + [1]
    assert out["errors"] == {"CUDA graph on": "RuntimeError: operation not permitted when stream is capturing"}
    assert not step_options().graph  # the defaults are back


def test_the_graph_part_measures_the_graphed_step_with_bf16_and_without(monkeypatch):
    """Each variant's step is built under its own switches (a captured bf16 step carries a third
    more kernels, casts, than a float32 one), and the process's switches are back after."""
    from nas_kd.device import step_options

    seen = []

    def payback(make, x, y, sizes, device, eager_seconds, first_steps=1):
        options = step_options()
        seen.append((options.graph, options.bf16))
        return {"setup_seconds": 1.0, "seconds": 0.01, "payback_steps": 2.0}

    class Bench:
        device = torch.device("cpu")

        def batch(self):
            return None, (torch.zeros(2), torch.zeros(2))

    monkeypatch.setattr(gs, "_payback", payback)
    before = step_options()
    out = gs._graph(Bench(), dataclasses.replace(SIZES, cuda_graphs=True), eager_seconds=0.04)
    assert seen == [(True, True), (True, False)] and list(out) == [gs.GRAPHED, gs.GRAPHED_FP32]
    assert step_options() == before
