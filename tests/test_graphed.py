"""The CUDA-graph step (``--gpu-step graph=1``, nas_kd.distill.graphed) on the CPU: no graph can be
captured here, so `EagerReplay` stands in for one (a "replay" runs the recorded call again on the
static inputs). What that checks is the schedule around the capture, which a real graph would
get wrong silently: the batch copied into the static inputs, the scheduler stepped once per step
outside the graph, a capture per value of the adversarial flag after its own warm-up, the NaN
check outside the graph; and that the step keeps no per-step state in Python, which a real graph
would freeze."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from nas_kd.config import Schedule
from nas_kd.distill import MODES, get_mode
from nas_kd.distill.graphed import EagerReplay, GraphedStep
from nas_kd.distill.trainer import build_scheduler, build_step
from nas_kd.models.student import build_student
from nas_kd.models.teachers import build_teacher
from nas_kd.train import NonFiniteLossError, build_optimizer
from tests.test_distill_step import CLASSES, CPU, SHAPE, TINY, attention_state, weights

STEPS = 12
SCHEDULE = Schedule(epochs=1, batch_size=16, lr=0.1, warmup_epochs=0.25)


@pytest.fixture(autouse=True)
def _no_earlier_failure(monkeypatch):
    """Each test starts as a fresh process would: no capture has failed in it yet."""
    import nas_kd.distill.graphed as graphed

    monkeypatch.setattr(graphed, "_process_failure", None)


def make_step(mode: str = "full"):
    torch.manual_seed(0)
    student = build_student(TINY, 1, CLASSES)
    recipe = get_mode(mode)
    teacher = build_teacher("resnet8", 1, CLASSES, reconstruction=SHAPE[1:] if recipe.needs_reconstruction else None).eval().requires_grad_(False)
    attention = attention_state(teacher)
    torch.manual_seed(1)
    return build_step(student, teacher, recipe, SCHEDULE, input_shape=SHAPE, num_classes=CLASSES, steps_per_epoch=STEPS, device=CPU, teacher_attention=attention)


def batches(n: int = STEPS):
    g = torch.Generator().manual_seed(3)
    return [(torch.randn(16, *SHAPE, generator=g), torch.randint(0, CLASSES, (16,), generator=g)) for _ in range(n)]


def run(step, data, adversarial_from: int = 5):
    torch.manual_seed(7)  # the discriminators' dropout
    losses = []
    for i, (x, y) in enumerate(data):
        r = step(x, y, adversarial=i >= adversarial_from)
        losses.append(float(r.checked))
    return losses


class CountingReplay(EagerReplay):
    """`EagerReplay` that counts its captures: on a GPU each is a whole step recorded, so a
    capture repeated where a replay was due would cost more than the eager step it replaces."""

    def __init__(self):
        self.captures = 0

    def capture(self, fn):
        self.captures += 1
        return super().capture(fn)


def test_replayed_steps_train_exactly_like_eager_ones():
    """Twelve distinct batches, the adversarial terms on from step 5: a warm-up of 2 steps and a
    capture for each flag value. Any step replayed on a stale batch, a scheduler stepped twice or
    not at all, or one capture shared by both flag values would change the weights; a flag value
    captured again instead of replayed would not, so the captures are counted."""
    eager, graphed = make_step(), make_step()
    backend = CountingReplay()
    wrapped = GraphedStep(graphed, backend=backend, warmup=2)
    data = batches()
    assert run(eager, data) == run(wrapped, data)
    a, b = weights(eager.student), weights(graphed.student)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert set(wrapped.captured) == {False, True} and wrapped.eager == {False: 2, True: 2}
    assert backend.captures == 2
    assert eager.optimizer.param_groups[0]["lr"] == graphed.optimizer.param_groups[0]["lr"]
    assert wrapped.scheduler.last_epoch == STEPS and graphed.scheduler is None


def test_the_graph_reads_its_own_copies_of_the_batch():
    """A graph reads fixed addresses: they must be buffers of its own, filled from each batch. Were
    they the capturing step's batch tensors, every later step would write its batch into tensors
    the caller handed over (and, on a GPU, may have freed and reused)."""
    step = GraphedStep(make_step(), backend=EagerReplay(), warmup=1)
    data = batches(4)
    kept = [(x.clone(), y.clone()) for x, y in data]
    run(step, data, adversarial_from=99)  # warm-up, capture (batch 1), two replays
    assert all(torch.equal(x, kx) and torch.equal(y, ky) for (x, y), (kx, ky) in zip(data, kept, strict=True))


def test_a_nan_in_a_replayed_step_is_caught_outside_the_graph(monkeypatch):
    """Checked after the replay, never inside the step: on a GPU a check inside the capture would
    be recorded once and its deferred read-back would hold a stale value."""
    import pytest

    import nas_kd.distill.step

    def inside(*_args, **_kw):
        raise AssertionError("the NaN check ran inside the captured step")

    monkeypatch.setattr(nas_kd.distill.step, "check_finite", inside)
    step = GraphedStep(make_step(), backend=EagerReplay(), warmup=1)
    data = batches(4)
    run(step, data[:3], adversarial_from=99)  # warm-up, capture, one replay
    x, y = data[3]
    x = x.clone()
    x[0, 0, 0, 0] = float("nan")
    with pytest.raises(NonFiniteLossError):
        step(x, y, adversarial=False)


def python_state(step) -> dict:
    """Every plain (non-tensor, non-module) attribute of every module the step runs: what a
    captured graph would freeze at its capture."""
    out = {}
    for owner in (step.student, step.objective):
        for name, m in owner.named_modules():
            for k, v in vars(m).items():
                if k.startswith("_") or isinstance(v, torch.Tensor | torch.nn.Module):
                    continue
                out[(type(owner).__name__, name, k)] = repr(v)
    return out


@pytest.mark.parametrize("mode", list(MODES))
def test_the_step_keeps_its_changing_state_on_the_device(mode):
    """A graph replays kernels, not Python: a counter or a running figure kept in a Python
    attribute would stop moving after the capture. The step's state (gates, the logit
    normaliser's moments, batch-norm statistics) must be in buffers."""
    step = make_step(mode)
    data = batches(4)
    run(step, data[:1], adversarial_from=0)
    before = python_state(step)
    run(step, data[1:], adversarial_from=0)
    assert python_state(step) == before


def test_a_device_learning_rate_follows_the_schedule():
    """The captured SGD reads its learning rate from a tensor the scheduler fills in place
    (build_optimizer's device_lr, fused): the rates and the updates match the float ones."""
    def train(**kw):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 2))
        opt = build_optimizer(model.named_parameters(), SCHEDULE, **kw)
        sched = build_scheduler(opt, SCHEDULE, STEPS)
        g = torch.Generator().manual_seed(0)
        rates = []
        for _ in range(STEPS):
            x = torch.randn(16, 8, generator=g)
            opt.zero_grad()
            model(x).pow(2).mean().backward()
            opt.step()
            sched.step()
            rates.append(float(opt.param_groups[0]["lr"]))
        return rates, [p.detach() for p in model.parameters()]

    rates, params = train()
    device_rates, device_params = train(fused=True, device_lr=CPU)
    # The scheduler's base rate is a float, not the rate tensor it fills (which would compound
    # the schedule on torch versions that aliased the two, pytorch/pytorch#163103).
    opt = build_optimizer(torch.nn.Linear(2, 2).named_parameters(), SCHEDULE, fused=True, device_lr=CPU)
    assert all(type(g["initial_lr"]) is float and g["initial_lr"] == SCHEDULE.lr for g in opt.param_groups)
    assert torch.allclose(torch.tensor(rates), torch.tensor(device_rates))
    assert len(set(rates)) > STEPS // 2  # the schedule moved
    assert all(torch.allclose(p, q, atol=1e-6) for p, q in zip(params, device_params, strict=True))


class HostReads(TorchDispatchMode):
    """The ops dispatched inside it that read a device value back to the host."""

    def __init__(self):
        super().__init__()
        self.seen: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func._schema.name
        if name in ("aten::_local_scalar_dense", "aten::is_nonzero", "aten::item", "aten::masked_select", "aten::unique") or "nonzero" in name:
            self.seen.append(name)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("mode", list(MODES))
def test_a_step_built_for_graphs_never_reads_the_device_back(monkeypatch, mode):
    """What makes a CUDA capture fail is an op that reads a device value back to the host (an
    .item(), a bool(), a nonzero). Built as `graph=1` builds it (fused optimisers, device learning
    rates, the check outside), the step dispatches none, in either flag's version; the default
    Adam (its step count read with .item()) or the check inside the step would."""
    import nas_kd.distill.trainer as trainer

    monkeypatch.setattr(trainer, "fused_optimisers", lambda device: True)
    monkeypatch.setattr(trainer, "graphed_steps", lambda device: True)
    step = GraphedStep(make_step(mode), backend=EagerReplay(), warmup=1).step  # as wrapped: the check moved out
    assert step.optimizer.defaults["fused"] and isinstance(step.optimizer.param_groups[0]["lr"], torch.Tensor)
    if step.disc_optimizer is not None:
        assert step.disc_optimizer.defaults["fused"] and step.disc_optimizer.defaults["capturable"]  # Adam.step refuses a capture without it

    data = batches(3)
    step(*data[0], adversarial=False)
    step(*data[1], adversarial=True)  # lazy state (momentum, Adam's moments) made outside the spy
    with HostReads() as spy:
        step(*data[2], adversarial=False)
        step(*data[2], adversarial=True)
    assert spy.seen == []


@pytest.mark.parametrize("mode", [m for m in MODES if get_mode(m).uses_teacher])
def test_a_cached_step_built_for_graphs_never_reads_the_device_back(monkeypatch, mode):
    """The same for a step that reads the teacher from its cache, as the brief trials of both
    presets do (no crops): the lookup by example index and flip flag must stay on the device."""
    import dataclasses

    import nas_kd.distill.trainer as trainer
    from nas_kd.data import load_splits
    from nas_kd.distill import TeacherCache
    from nas_kd.train import make_loaders

    monkeypatch.setattr(trainer, "fused_optimisers", lambda device: True)
    monkeypatch.setattr(trainer, "graphed_steps", lambda device: True)
    splits = load_splits("synthetic", train_subset=64)
    splits = dataclasses.replace(splits, info=dataclasses.replace(splits.info, flip=True))  # two views
    loader = make_loaders(splits, batch_size=16, device=CPU, seed=0, crop=False)[0]
    torch.manual_seed(0)
    recipe = get_mode(mode)
    teacher = build_teacher("resnet8", 1, CLASSES, reconstruction=SHAPE[1:] if recipe.needs_reconstruction else None).eval().requires_grad_(False)
    cache = TeacherCache(teacher, loader, mode, num_classes=CLASSES)
    student = build_student(TINY, 1, CLASSES)
    built = build_step(student, teacher, recipe, SCHEDULE, input_shape=SHAPE, num_classes=CLASSES, steps_per_epoch=STEPS, device=CPU, cache=cache, teacher_attention=cache.attention_state)
    step = GraphedStep(built, backend=EagerReplay(), warmup=1).step
    assert step.cache is cache
    data = list(loader.batches())
    assert any(b.flipped.any() for b in data)  # both views are looked up
    for b, adversarial in zip(data[:2], (False, True), strict=True):
        step(b.x, b.y, adversarial, index=b.index, flipped=b.flipped)
    with HostReads() as spy:
        for adversarial in (False, True):
            step(data[2].x, data[2].y, adversarial, index=data[2].index, flipped=data[2].flipped)
    assert spy.seen == []


def test_the_optimisers_accept_a_capture(monkeypatch):
    """Adam's step() refuses to run inside a CUDA capture unless it is capturable (PyTorch's
    capture health check). With the check told a capture is under way (no GPU here), the step
    built for graphs runs both updates; the discriminators' Adam without `capturable` raises."""
    import types

    import pytest

    import nas_kd.distill.trainer as trainer

    monkeypatch.setattr(trainer, "fused_optimisers", lambda device: True)
    monkeypatch.setattr(trainer, "graphed_steps", lambda device: True)
    step = GraphedStep(make_step(), backend=EagerReplay(), warmup=1).step
    data = batches(2)
    step(*data[0], adversarial=True)
    monkeypatch.setattr(torch.accelerator, "current_accelerator", lambda check_available=False: torch.device("cuda"))
    monkeypatch.setattr(torch.accelerator, "current_stream", lambda *a, **k: types.SimpleNamespace(is_capturing=lambda: True))
    step(*data[1], adversarial=True)
    for group in step.disc_optimizer.param_groups:
        group["capturable"] = False
    with pytest.raises(RuntimeError, match="capturable is False"):
        step(*data[1], adversarial=True)


def test_the_cuda_backend_s_python_path(monkeypatch):
    """`CudaGraphs` itself, with CUDA's stream and graph calls stubbed (no GPU here): warm-ups run
    on a side stream that waits for the current one and is waited for; the capture runs the step
    once inside `torch.cuda.graph` and every replay replays that graph and returns the captured
    result. What the stubs cannot check (that the kernels capture) only a GPU can."""
    import contextlib
    from types import SimpleNamespace

    from nas_kd.distill.graphed import CudaGraphs

    events = []

    class Stream:
        def wait_stream(self, other):
            events.append("wait")

    class Graph:
        def replay(self):
            events.append("replay")

    @contextlib.contextmanager
    def in_context(name):
        events.append(f"enter {name}")
        yield
        events.append(f"exit {name}")

    monkeypatch.setattr(torch.cuda, "Stream", Stream)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda: Stream())
    monkeypatch.setattr(torch.cuda, "stream", lambda s: in_context("stream"))
    monkeypatch.setattr(torch.cuda, "CUDAGraph", Graph)
    monkeypatch.setattr(torch.cuda, "graph_pool_handle", lambda: (0, 1))
    monkeypatch.setattr(torch.cuda, "graph", lambda g, pool: in_context("graph"))
    backend = CudaGraphs()
    result = SimpleNamespace(checked=torch.tensor(1.0))

    def step():
        events.append("step")
        return result

    assert backend.warmup(step) is result
    assert events == ["wait", "enter stream", "step", "exit stream", "wait"]
    events.clear()
    replay = backend.capture(step)
    assert events == ["enter graph", "step", "exit graph"]
    events.clear()
    assert replay() is result and replay() is result
    assert events == ["replay", "replay"]  # the step's Python never runs again


def test_a_failed_capture_gives_back_the_stream_and_the_pool(monkeypatch):
    """`torch.cuda.graph` ends its capture before it restores the stream: a capture_end that
    raises would leave the capture's side stream current and the allocator counting a capture
    into the graph's pool for the rest of the process. `CudaGraphs.capture` restores the stream
    it started on and ends and releases that pool (CUDA's calls stubbed: no GPU here), then
    raises for GraphedStep's fallback. An undo the allocator refuses (nothing to undo) is not an
    error."""
    import contextlib

    import nas_kd.distill.graphed as graphed
    from nas_kd.distill.graphed import CudaGraphs

    events = []

    class Stream:
        device_index = 3

    start = Stream()

    @contextlib.contextmanager
    def capture(graph, pool):
        events.append(("capture into", pool))
        yield
        raise RuntimeError("CUDA error: operation failed due to a previous error during capture")

    def refused(device, pool):
        events.append(("release", device, pool))
        raise RuntimeError("not currently recording to this pool")

    monkeypatch.setattr(torch.cuda, "CUDAGraph", lambda: object())
    monkeypatch.setattr(torch.cuda, "graph_pool_handle", lambda: (0, 7))
    monkeypatch.setattr(torch.cuda, "current_stream", lambda: start)
    monkeypatch.setattr(torch.cuda, "graph", capture)
    monkeypatch.setattr(torch.cuda, "set_stream", lambda s: events.append(("stream", s)))
    monkeypatch.setattr(torch._C, "_cuda_endAllocateToPool", lambda device, pool: events.append(("end", device, pool)), raising=False)
    monkeypatch.setattr(torch._C, "_cuda_releasePool", refused, raising=False)
    with pytest.raises(RuntimeError, match="during capture"):
        CudaGraphs().capture(lambda: events.append("step"))
    assert events == [("capture into", (0, 7)), "step", ("stream", start), ("end", 3, (0, 7)), ("release", 3, (0, 7))]
    # A capture that succeeds undoes nothing.
    events.clear()
    monkeypatch.setattr(torch.cuda, "graph", lambda graph, pool: contextlib.nullcontext())
    CudaGraphs().capture(lambda: events.append("step"))
    assert events == ["step"] and graphed._process_failure is None


def test_a_graphed_training_run_matches_the_eager_one(monkeypatch):
    """`train` end to end with the graph switch's wrapper (EagerReplay for the GPU's graphs): the
    teacher cache's index and flip inputs copied into the static buffers, the adversarial flag
    switching on mid-run, evaluation between epochs. Same history, same weights as eagerly."""
    import nas_kd.distill.trainer as trainer
    from nas_kd.data import load_splits
    from nas_kd.distill import train

    splits = load_splits("synthetic", train_subset=64)
    # 40 steps: the adversarial terms start at step 4 (adv_warmup 0.1), after a capture without them.
    schedule = Schedule(epochs=10, batch_size=16, lr=0.05, warmup_epochs=0.5, crop=False)  # no crop: the teacher is cached

    def run_once():
        torch.manual_seed(0)
        teacher = build_teacher("resnet8", 1, CLASSES).eval()
        student = build_student(TINY, 1, CLASSES)
        m = train(student, teacher, splits, schedule, "full", device=CPU, seed=0)
        return m, weights(student)

    eager, eager_w = run_once()
    wrapped = []
    monkeypatch.setattr(trainer, "maybe_graphed", lambda step, device, on_capture_failure: wrapped.append(GraphedStep(step, backend=EagerReplay(), warmup=2, on_capture_failure=on_capture_failure)) or wrapped[-1])
    graphed, graphed_w = run_once()
    assert wrapped and wrapped[0].step.cache is not None and set(wrapped[0].captured) == {False, True}
    assert [h["val_accuracy"] for h in graphed["history"]] == [h["val_accuracy"] for h in eager["history"]]
    assert [h["losses"] for h in graphed["history"]] == [h["losses"] for h in eager["history"]]
    assert all(torch.equal(eager_w[k], graphed_w[k]) for k in eager_w)
    assert graphed["step_graph"] == "captured" and "step_graph" not in eager  # what a trial records


def test_a_scheduler_that_replaces_the_rate_tensors_is_refused(monkeypatch):
    """A graph reads the rate tensors it captured; a scheduler assigning new rates instead of
    filling those would leave every replay at the captured rate, silently. It is refused."""
    import pytest

    import nas_kd.distill.trainer as trainer

    monkeypatch.setattr(trainer, "fused_optimisers", lambda device: True)
    monkeypatch.setattr(trainer, "graphed_steps", lambda device: True)
    step = GraphedStep(make_step(), backend=EagerReplay(), warmup=1)
    data = batches(4)
    run(step, data[:3], adversarial_from=99)  # warm-up, capture, replay: the scheduler fills in place
    groups = step.step.optimizer.param_groups

    def replacing(*_args):
        for g in groups:
            g["lr"] = float(g["lr"])

    monkeypatch.setattr(step.scheduler, "step", replacing)
    with pytest.raises(RuntimeError, match="replaced the optimiser's rate tensors"):
        step(*data[3], adversarial=False)


class FailingCapture(EagerReplay):
    """A backend whose capture fails, as an op a CUDA graph cannot record would make it."""

    def __init__(self):
        self.attempts = 0

    def capture(self, fn):
        self.attempts += 1
        raise RuntimeError("operation not permitted when stream is capturing")


def test_a_step_that_cannot_be_captured_trains_eagerly_and_says_so_once(monkeypatch):
    """In a trial a failed capture must not cost the trial: the batch whose capture failed is
    trained eagerly, so are all later ones, and the run matches an eager one exactly; the failure
    is told once per process. The bench, which passes no handler, gets the error itself."""
    import pytest

    import nas_kd.distill.graphed as graphed

    monkeypatch.setattr(graphed, "_told", set())
    eager, fallback = make_step(), make_step()
    told = []
    backend = FailingCapture()
    wrapped = GraphedStep(fallback, backend=backend, warmup=2, on_capture_failure=graphed.tell_once(told.append))
    data = batches()
    assert run(eager, data) == run(wrapped, data)
    a, b = weights(eager.student), weights(fallback.student)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert wrapped.failure == "RuntimeError: operation not permitted when stream is capturing" and not wrapped.captured
    assert backend.attempts == 1  # not retried at every step (a capture attempt costs a device sync)
    assert len(told) == 1 and told[0].startswith("graph: the step could not be captured in a CUDA graph (RuntimeError")
    retry = FailingCapture()
    again = GraphedStep(make_step(), backend=retry, warmup=1, on_capture_failure=graphed.tell_once(told.append))
    run(again, batches(3))
    assert len(told) == 1  # the same error in the next trial is not told again
    # ... nor tried again: the step's code is the same in every trial of the process
    assert retry.attempts == 0 and again.failure == "not attempted: a capture failed earlier in this process (RuntimeError: operation not permitted when stream is capturing)"
    bench = GraphedStep(make_step(), backend=FailingCapture(), warmup=1)
    with pytest.raises(RuntimeError, match="stream is capturing"):
        run(bench, batches(2))


def test_a_run_whose_capture_failed_records_why(monkeypatch):
    """`train`'s metrics say how the graph switch went, and the search stores it with the trial
    (bench-gpu's jobs table reads it): a fallback must not pass for a graphed run."""
    import nas_kd.distill.graphed as graphed
    import nas_kd.distill.trainer as trainer
    from nas_kd.data import load_splits
    from nas_kd.distill import train

    monkeypatch.setattr(graphed, "_told", set())
    told = []
    monkeypatch.setattr(trainer, "maybe_graphed", lambda step, device, on_capture_failure: GraphedStep(step, backend=FailingCapture(), warmup=1, on_capture_failure=on_capture_failure))
    torch.manual_seed(0)
    m = train(build_student(TINY, 1, CLASSES), build_teacher("resnet8", 1, CLASSES).eval(), load_splits("synthetic", train_subset=64), Schedule(epochs=1, batch_size=16, lr=0.05, crop=False), "full", device=CPU, seed=0, log=told.append)
    assert m["step_graph"] == "eager: RuntimeError: operation not permitted when stream is capturing"
    graph_lines = [line for line in told if line.startswith("graph:")]
    assert len(graph_lines) == 1 and "this run trains eagerly" in graph_lines[0]


class InPlaceReplay(EagerReplay):
    """Replays like a CUDA graph: every replay rewrites the same output tensors in place. The
    replays listed in ``nan_at`` (counted from 1) give a NaN loss, as a diverging step would,
    without a NaN reaching the weights (so later losses are finite again)."""

    def __init__(self, nan_at=()):
        self.nan_at, self.replays = set(nan_at), 0

    def capture(self, fn):
        outputs = []

        def replay():
            self.replays += 1
            result = fn()
            if not outputs:
                outputs.append(result)
            else:
                outputs[0].checked.copy_(result.checked)
            if self.replays in self.nan_at:
                outputs[0].checked.fill_(float("nan"))
            return outputs[0]

        return replay


def test_a_deferred_nan_check_reports_the_nan_though_later_replays_rewrite_the_output(monkeypatch):
    """On a GPU the check is read back every few steps: it must keep the NaN step's value, not a
    view of the captured output that the next replay overwrites with a finite loss."""
    import nas_kd.device
    from nas_kd.train import flush_finite_checks

    flush_finite_checks()
    monkeypatch.setattr(nas_kd.device, "check_interval", lambda device: 2)
    step = GraphedStep(make_step(), backend=InPlaceReplay(nan_at={2}), warmup=1)
    data = batches(4)
    for x, y in data[:3]:  # an eager warm-up, a replay (read back: finite), the NaN replay
        step(x, y, adversarial=False)
    with pytest.raises(NonFiniteLossError, match="distillation loss became nan"):
        step(*data[3], adversarial=False)  # a finite replay rewrites the output; the read-back still says nan

def test_a_capture_failure_is_told_once_per_distinct_error(monkeypatch):
    import nas_kd.distill.graphed as graphed

    monkeypatch.setattr(graphed, "_told", set())
    told = []
    tell = graphed.tell_once(told.append)
    for error in (RuntimeError("a"), RuntimeError("a"), ValueError("a"), RuntimeError("b")):
        tell(error)
    assert len(told) == 3 and "(RuntimeError: a)" in told[0] and "(ValueError: a)" in told[1] and "(RuntimeError: b)" in told[2]
