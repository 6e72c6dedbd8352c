"""bench.gpu_step's own rules, without training: each part of the step section is kept as it
finishes and read back by the next call, a part that fails costs only itself, and a diverged
batch-table run is a row's result, not the section's end (the second GPU session lost a finished
breakdown and switch table to one NaN)."""

from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace

import pytest
import torch

import bench.gpu_step as gs
from nas_kd.config import Schedule
from nas_kd.cost import torch_threads
from nas_kd.train import NonFiniteLossError

SIZES = gs.StepSizes(reps=1, warmup=0, batch_sizes=(32, 64, 128), batch_seeds=(0, 1), compile_backend="eager", cuda_graphs=False,
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


def measure(kept, left=lambda: float("inf")):
    return gs.measure_step(SPLITS, None, None, SCHEDULE, torch.device("cpu"), SIZES, left=left, kept=kept)


def test_parts_are_kept_as_they_finish_and_not_measured_again(tmp_path, fake_parts):
    assert measure(tmp_path, left=lambda: 10.0) is None  # no time for the batch table (50 s)
    assert sorted(p.stem for p in tmp_path.glob("*.json")) == ["breakdown", "compile", "graph", "switches"]
    assert json.loads((tmp_path / "graph.json").read_text()) == {"graph": 0.04}
    r = measure(tmp_path)
    assert fake_parts == {"breakdown": 1, "graph": 1, "switches": 1, "batch": 1, "compile": 1}  # only the batch table ran again
    assert r["breakdown"] == {"seconds": {"full": 0.04}} and r["batch"] == [{"batch_size": 32}] and r["compile"] == {"compiled": 0.04}
    assert r["steps_per_brief_trial"] == 20


def test_a_failing_part_keeps_the_parts_before_it(tmp_path, fake_parts, monkeypatch):
    def broken(b, sizes):
        raise RuntimeError("CUDA error")

    monkeypatch.setattr(gs, "_switches", broken)
    with pytest.raises(RuntimeError):
        measure(tmp_path)
    assert sorted(p.stem for p in tmp_path.glob("*.json")) == ["breakdown", "graph"]


def test_graph_and_compile_wait_for_the_breakdown(tmp_path, fake_parts):
    sizes = dataclasses.replace(SIZES, part_seconds=(("breakdown", 99.0), ("graph", 1.0), ("switches", 1.0), ("batch", 1.0), ("compile", 1.0)))
    r = gs.measure_step(SPLITS, None, None, SCHEDULE, torch.device("cpu"), sizes, left=lambda: 10.0, kept=tmp_path)
    assert r is None and fake_parts["graph"] == 0 and fake_parts["compile"] == 0 and fake_parts["switches"] == 1


def test_the_batch_table_scales_lr_both_ways():
    assert gs.batch_rows(256, 0.2, (256, 1024)) == [(256, 0.2, "schedule"), (1024, 0.8, "linear"), (1024, 0.4, "sqrt")]


def test_a_diverged_batch_run_is_recorded_and_the_table_goes_on():
    def train(cfg, teacher, splits, schedule, mode, seed, device):
        if schedule.lr > 0.25 and seed == 1:  # the linear rule at 4x diverges for one seed
            raise NonFiniteLossError("distillation loss became nan")
        return {"val_accuracy": 0.8, "train_seconds": 2.0, "images_per_second": 320.0}

    b = SimpleNamespace(schedule=SCHEDULE, splits=SPLITS, cfg=None, teacher=None, device=torch.device("cpu"))
    rows = gs._batches(b, SIZES, train=train)
    assert [(r["batch_size"], r["lr_rule"]) for r in rows] == [(32, "schedule"), (64, "linear"), (64, "sqrt"), (128, "linear"), (128, "sqrt")]
    bad = rows[3]
    assert bad["val_accuracy"] == [0.8] and bad["diverged"] == [{"seed": 1, "error": "distillation loss became nan"}]
    assert all(not r["diverged"] and r["val_accuracy"] == [0.8, 0.8] for i, r in enumerate(rows) if i != 3)
    md = "\n".join(gs.step_markdown({
        "batch_size": 32, "steps_per_brief_trial": 20, "breakdown": {"seconds": {"full": 0.04}, "profile": {"kernel_launches": 0, "aten_ops": 1, "busy_share": None}},
        "graph": {gs.GRAPHED: {"error": "skipped: needs CUDA"}}, "switches": {"seconds": {"defaults": 0.04}, "new_student_seconds": {"defaults": 1.5}, "errors": {"CUDA graph on": "RuntimeError: capture failed"}}, "batch": rows, "compile": {},
    }))
    assert "| 128 | 0.4 (linear) |" in md and "80.00, diverged (seed 1)" in md and "skipped: needs CUDA" in md and "| defaults | 40.00 | 1.00 | 1.50 |" in md and "| CUDA graph on | failed: RuntimeError: capture failed |" in md


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
