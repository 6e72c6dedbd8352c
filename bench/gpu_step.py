"""Where a tiny student's distillation step goes on a GPU, and what each switch is worth.

Used by `bench.gpu` (section ``step``); five parts, in this order (the most telling first), each of
one step of the ~0.5M-MAC mbv2 student in mode ``full``, at the brief schedule's batch. Each part is
kept in its own file as it finishes (`measure_step`'s ``kept``, in the GPU state archive): a call
that runs out of time, or a part that fails, costs only the part it was in (the second GPU session
lost a whole finished breakdown and switch table to a NaN in the batch table). A part also marks
its start (`STARTED`, packed before it runs): one whose mark a later call finds was killed at the
device's limit, and the graph, batch and compile parts record that as their result rather than
end every later call the same way (a cold torch.compile has no measured duration yet).

1. **breakdown**: ms per step of the data alone (one batch from the device loader), the teacher's
   forward alone, the student alone (mode ce), kd and full, and full with its data; per full step
   the kernels launched and the device's busy share (profiler kernel time over wall time), and
   the launches and ops of each part of the step (`per_part`). A step far from 100 % busy waits
   on the host (launches, Python), which is what ``--jobs`` fills; the first GPU call measured
   12 % busy and 1,425 launches per full step of the 0.48M student.
2. **graph**: on a GPU, the product's whole step captured in one CUDA graph per trial
   (`nas_kd.distill.graphed`, ``--gpu-step graph=1``): set-up seconds, ms per step, and the steps
   it needs to pay back, against a brief trial's steps. The answer to a host-bound step, so it
   comes second.
3. **switches**: the full step with each `nas_kd.device.StepOptions` switch turned off in turn.
4. **batch**: the product's steady step at larger batches, as a brief trial runs it (the teacher
   from its cache where the brief schedule has no crops), eager and on a GPU in a CUDA graph:
   ms per step, images/s and what an epoch of such steps costs. Then the same for the *goal
   student* (``goal``: issue 13's 2M-MAC one, whose epoch with the teacher should take under
   0.5 s) in ``full`` and in ``kd`` at `StepSizes.goal_batch_sizes`: which of mode, batch and graph
   the goal needs, as a lower bound (a trial's epoch adds its evaluation and set-up; the jobs
   section judges the goal on real trials). A step that fails is its row's result. How accuracy
   holds at these batches and modes is measured on the CPU, where it costs no GPU time
   (`bench/standard_brief.py`; until session 18 this part trained 10 brief runs, ~220 s of GPU).
5. **compile**: ``torch.compile`` of the student's forward (per trial: every trial is a new
   network), with ``mode="reduce-overhead"`` (CUDA graphs) and of the teacher's (once per process):
   set-up seconds, ms per step and payback, like the graph. Last: cold inductor compiles are the
   one part whose time nobody has measured here.

Step times are the mean of `reps` back-to-back steps with one device sync at the end (the
pipelined steady state a training loop sees), median of three such blocks.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from nas_kd.device import StepOptions, configure_step, step_options
from nas_kd.distill import get_mode
from nas_kd.distill.graphed import maybe_graphed
from nas_kd.distill.step import teacher_outputs
from nas_kd.distill.trainer import build_step
from nas_kd.errors import one_line
from nas_kd.models.student import build_student
from nas_kd.train import make_loaders, reset_finite_checks

__all__ = ["StepSizes", "measure_step", "step_markdown"]

BLOCKS = 3  # timing blocks per figure; the median is reported


@dataclass(frozen=True)
class StepSizes:
    reps: int  # steps per timing block
    warmup: int  # steps before timing: allocator, cuDNN autotuning, lazy inits
    batch_sizes: tuple[int, ...]  # for the batch measurement (the first is the brief schedule's)
    compile_backend: str  # "inductor" on a GPU; "eager" (graph capture only) for the CPU smoke
    cuda_graphs: bool  # also try mode="reduce-overhead" and the whole-step graph (need CUDA)
    part_seconds: tuple[tuple[str, float], ...]  # each part's estimate (`PARTS`): it starts only if it fits
    goal_batch_sizes: tuple[int, ...] = ()  # the batch part's goal student, in full and kd, at these

    def part_estimate(self, part: str) -> float:
        return dict(self.part_seconds)[part]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _seconds_per_call(fn, sizes: StepSizes, device: torch.device) -> float:
    for _ in range(sizes.warmup):
        fn()
    blocks = []
    for _ in range(BLOCKS):
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(sizes.reps):
            fn()
        _sync(device)
        blocks.append((time.perf_counter() - t0) / sizes.reps)
    return statistics.median(blocks)


def _profile(fn, steps: int, device: torch.device) -> dict:
    """Per step: kernel launches (CUDA) or aten ops dispatched (CPU), and device kernel time."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    _sync(device)
    t0 = time.perf_counter()
    with profile(activities=activities) as prof:
        for _ in range(steps):
            fn()
        _sync(device)
    wall = (time.perf_counter() - t0) / steps
    averages = prof.key_averages()
    launches = sum(e.count for e in averages if "LaunchKernel" in e.key) / steps
    ops = sum(e.count for e in averages if e.key.startswith("aten::")) / steps
    kernel_s = kernel_seconds(averages) / steps
    return {"kernel_launches": launches, "aten_ops": ops, "kernel_seconds": kernel_s, "profiled_wall_seconds": wall, "parts": per_part(prof.events(), steps)}


def per_part(events, steps: int) -> dict[str, dict[str, float]]:
    """Per step and per part of the step (`nas_kd.distill.step.PARTS`, the profiler ranges the step
    names; "other": outside them, the loss check and the step's own bookkeeping): kernel launches
    and aten ops called from Python (an op inside another op is that op's work, not a dispatch of
    its own). What a host-bound step spends its launches on, so the part worth fusing, capturing or
    dropping is named by a measurement."""
    from nas_kd.distill.step import PARTS

    counts = {part: {"kernel_launches": 0, "aten_ops": 0} for part in (*PARTS, "other")}
    for e in events:
        launch, op = "LaunchKernel" in e.name, e.name.startswith("aten::")
        if not (launch or (op and not (e.cpu_parent is not None and e.cpu_parent.name.startswith("aten::")))):
            continue
        part, p = "other", e.cpu_parent
        while p is not None:
            if p.name.startswith("distill."):
                part = p.name.removeprefix("distill.")
                break
            p = p.cpu_parent
        counts[part]["kernel_launches" if launch else "aten_ops"] += 1
    return {part: {k: v / steps for k, v in c.items()} for part, c in counts.items()}


def kernel_seconds(averages) -> float:
    """Device time of the kernels alone. An op that launches a kernel reports the kernel's time as
    its own self device time too, and a record_function range (the optimizer's step) again: only
    the device-side rows count, as PyTorch's own table total does (torch/autograd/profiler_util.py,
    _build_table; pytorch/pytorch#60783)."""
    from torch.autograd import DeviceType

    rows = [e for e in averages if e.device_type == DeviceType.CUDA and not getattr(e, "is_user_annotation", False)]
    return sum(e.self_device_time_total for e in rows) / 1e6


class _Bench:
    """The fixed pieces every measurement shares: data, teacher, student config, schedule."""

    def __init__(self, splits, teacher, cfg, schedule, device, goal=None):
        self.splits, self.teacher, self.cfg, self.schedule, self.device = splits, teacher, cfg, schedule, device
        self.goal = goal  # (label, config) of the batch part's goal student, or None

    def batch(self):
        # Loaders are made after configure_step, so the batch has the configured memory format.
        train, _, _ = make_loaders(self.splits, batch_size=self.schedule.batch_size, device=self.device, seed=0, crop=self.schedule.crop)
        return train, next(iter(train))

    def attention(self, teacher):
        """The frozen teacher attention `desc` needs (fitted once per teacher, as a search does)."""
        from nas_kd.distill.attention_fit import fit_teacher_attention

        fitted = self.__dict__.setdefault("_attention", {})
        if id(teacher) not in fitted:
            fitted[id(teacher)] = fit_teacher_attention(teacher, self.batch()[0], self.splits.info.num_classes)
        return fitted[id(teacher)]

    def map_scales(self, teacher):
        """The teacher's map scales (`teacher_map_scales`), measured once per teacher."""
        from nas_kd.distill.map_scale import teacher_map_scales

        measured = self.__dict__.setdefault("_scales", {})
        if id(teacher) not in measured:
            measured[id(teacher)] = teacher_map_scales(teacher, self.batch()[0])
        return measured[id(teacher)]

    def step(self, mode: str, teacher=None, schedule=None, cache=None, cfg=None):
        """A live-teacher step unless ``cache`` is given: what this section measures first is where
        the step's time goes, the teacher's share included. ``cfg``: another student than the
        section's."""
        torch.manual_seed(0)
        student = build_student(cfg or self.cfg, self.splits.info.channels, self.splits.info.num_classes)
        info, teacher, mode = self.splits.info, teacher or self.teacher, get_mode(mode)
        attention = cache.attention_state if cache is not None else self.attention(teacher) if mode.weights.desc else None
        scales = self.map_scales(teacher) if mode.uses_maps else None  # as the trainer measures them
        step = build_step(student, teacher, mode, schedule or self.schedule, input_shape=info.input_shape, num_classes=info.num_classes, steps_per_epoch=100, device=self.device, teacher_attention=attention, cache=cache, map_scales=scales)
        return maybe_graphed(step, self.device)  # as the trainer does: the `graph` switch


def _breakdown(b: _Bench, sizes: StepSizes) -> dict:
    train, (x, y) = b.batch()

    def forever():  # new batches every epoch (itertools.cycle would replay stored ones)
        while True:
            yield from train

    batches = forever()
    steps = {mode: b.step(mode) for mode in ("ce", "kd", "full")}
    objective = steps["full"].objective  # the teacher pass exactly as a live `full` step makes it
    parts = {
        "data": lambda: next(batches),
        "teacher forward": lambda: teacher_outputs(b.teacher, x, objective.map_stages, objective.attention, objective.desc_stages),
        "student alone (ce)": lambda: steps["ce"](x, y),
        "kd": lambda: steps["kd"](x, y),
        "full": lambda: steps["full"](x, y),
        "full with its data": lambda: steps["full"](*next(batches)),
    }
    out = {name: _seconds_per_call(fn, sizes, b.device) for name, fn in parts.items()}
    profile = _profile(parts["full"], max(2, sizes.reps), b.device)
    # Busy share against the unprofiled step: the profiler's own per-op cost inflates its wall time.
    profile["busy_share"] = profile["kernel_seconds"] / out["full"] if b.device.type == "cuda" and out["full"] > 0 else None
    return {"seconds": out, "profile": profile}


SWITCHES = {
    "defaults": {},
    "bf16 off": {"bf16": False},
    "channels_last off": {"channels_last": False},
    "cuDNN benchmark off": {"benchmark": False},
    "NaN check every step": {"check_every": 1},
    "fused optimisers on": {"fused": True},
    "CUDA graph on": {"graph": True},  # its steady step; the graph part has its set-up
}


# The defaults with fewer intra-op threads than the process has (16 on the lent GPU machine). A
# trial ran slower alone (--jobs 1: all the threads) than as one of four (--jobs 4: 4 threads
# each) in session 16; if the step itself is slower with many threads, these rows show it.
THREAD_ROWS = {"4 torch threads (as each of --jobs 4)": 4, "1 torch thread": 1}


def _switches(b: _Bench, sizes: StepSizes) -> dict:
    """Per switch: the steady step (``seconds``) and what a trial pays once for its new network
    (``new_student_seconds``: building the student and its step, which runs it once to size the
    adapters, and its first training step; with cuDNN's benchmark on, the autotuning of every new
    conv shape is in it, which only the trial's steady steps can pay back); then the defaults at
    the thread counts of `THREAD_ROWS` (``threads``: the process's own count, the defaults' row).
    A switch whose step fails (a capture a GPU refuses) records its error under ``errors``; the
    others still run."""
    from nas_kd.device import torch_threads

    base = StepOptions()
    out: dict = {"seconds": {}, "new_student_seconds": {}, "errors": {}, "threads": torch.get_num_threads()}

    def measure(name: str) -> None:
        try:
            _, (x, y) = b.batch()
            _sync(b.device)
            t0 = time.perf_counter()
            step = b.step("full")
            step(x, y)
            _sync(b.device)
            out["new_student_seconds"][name] = time.perf_counter() - t0
            out["seconds"][name] = _seconds_per_call(lambda step=step, x=x, y=y: step(x, y), sizes, b.device)
        except Exception as e:  # noqa: BLE001 - one switch's failure is its row's result
            reset_finite_checks()
            out["errors"][name] = one_line(e, 160)

    try:
        for name, change in SWITCHES.items():
            configure_step(dataclasses.replace(base, **change))
            measure(name)
    finally:
        configure_step(base)
    for name, threads in THREAD_ROWS.items():
        if threads < out["threads"]:
            with torch_threads(threads):
                measure(name)
    return out


def _compile(b: _Bench, sizes: StepSizes, eager_seconds: float) -> dict:
    """Each variant: seconds of its first step (compilation) minus an eager step, then the steady
    step time; a variant that fails records its error instead of stopping the section."""
    _, (x, y) = b.batch()

    def compiled_student(mode=None):
        step = b.step("full")
        s = step.student
        # Patched on the instance after build_step, which has already run the student once to
        # size the adapters: the compiled function sees only training batches.
        s.forward = torch.compile(s.forward, backend=sizes.compile_backend, mode=mode)
        s.forward_stages = torch.compile(s.forward_stages, backend=sizes.compile_backend, mode=mode)
        return step

    def compiled_teacher():
        teacher = copy.deepcopy(b.teacher)  # the shared teacher stays eager for the other figures
        step = b.step("full", teacher=teacher)
        # Patched after build_step and the attention fit, which run the teacher at other batch
        # sizes: compiled earlier, dynamo would recompile for a dynamic batch outside the timing.
        teacher.forward_stages = torch.compile(teacher.forward_stages, backend=sizes.compile_backend, dynamic=False)
        return step

    variants = {"student compiled": compiled_student, "teacher compiled": compiled_teacher}
    if sizes.cuda_graphs:
        variants["student compiled, CUDA graphs (reduce-overhead)"] = lambda: compiled_student("reduce-overhead")
    out = {}
    for name, make in variants.items():
        torch._dynamo.reset()
        out[name] = _payback(make, x, y, sizes, b.device, eager_seconds)
    torch._dynamo.reset()
    return out


def _payback(make, x, y, sizes: StepSizes, device, eager_seconds: float, first_steps: int = 1) -> dict:
    """A variant's set-up (its first ``first_steps`` steps minus as many eager ones), steady step
    time and the steps it needs to pay the set-up back; a variant that fails records its error
    instead of stopping the section (a compiler or capture failure is a result to report, not a
    crash)."""
    try:
        step = make()
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(first_steps):
            step(x, y)
        _sync(device)
        setup = time.perf_counter() - t0 - first_steps * eager_seconds
        steady = _seconds_per_call(lambda: step(x, y), sizes, device)
    except Exception as e:  # noqa: BLE001
        return {"error": one_line(e, 160)}
    saved = eager_seconds - steady
    return {"setup_seconds": max(0.0, setup), "seconds": steady, "payback_steps": setup / saved if saved > 0 else None}


def _graph(b: _Bench, sizes: StepSizes, eager_seconds: float) -> dict:
    """The product's CUDA-graph step (`nas_kd.distill.graphed`, ``--gpu-step graph=1``): its
    set-up is what its first `WARMUP` + 1 steps (eager warm-up, capture, first replay) cost beyond
    as many eager steps; then the steady replayed step and the steps that pay the set-up back."""
    if not sizes.cuda_graphs:
        return {name: {"error": "skipped: needs CUDA"} for name in GRAPH_VARIANTS}
    from nas_kd.distill.graphed import WARMUP

    before, out = step_options(), {}
    try:
        for name, change in GRAPH_VARIANTS.items():
            configure_step(dataclasses.replace(before, **change))
            _, (x, y) = b.batch()
            out[name] = _payback(lambda: b.step("full"), x, y, sizes, b.device, eager_seconds, first_steps=WARMUP + 1)
            reset_finite_checks()
    finally:
        configure_step(before)
        reset_finite_checks()
    return out


GRAPHED = "whole step in one CUDA graph per trial (--gpu-step graph=1)"
# The same without bf16: in a captured step the device time is the sum of the kernels, and bf16
# autocast adds a third more of them (weight and activation casts: bench/step_ops.py, counted on
# the CPU) to convolutions too small to gain from bfloat16.
GRAPHED_FP32 = "the same in float32 (--gpu-step graph=1,bf16=0)"
GRAPH_VARIANTS = {GRAPHED: {"graph": True}, GRAPHED_FP32: {"graph": True, "bf16": False}}


SECTION_STUDENT = "the section's"  # the batch rows' label of the section's own student
EPOCH_GOAL_S = 0.5  # issue 13: a 2M-MAC student's epoch with the teacher, in seconds


def _batches(b: _Bench, sizes: StepSizes) -> list[dict]:
    """Per batch size (module docstring, part 4): the steady `full` step eager and, with
    ``sizes.cuda_graphs``, captured (``--gpu-step graph=1``); each as ms per step, images/s and
    seconds per epoch of the training split; then, with ``b.goal``, the goal student's `full` and
    `kd` steps at ``sizes.goal_batch_sizes``. A variant whose step fails records its error."""
    from nas_kd.distill import TeacherCache

    cache, rows, loaded = None, [], {}  # loaded: batch size -> (train loader, its first batch), shared by the students
    variants = {"eager": {}, **({"graph": {"graph": True}} if sizes.cuda_graphs else {})}
    plan = [(SECTION_STUDENT, None, "full", bs) for bs in sizes.batch_sizes]
    if b.goal is not None:
        plan += [(b.goal[0], b.goal[1], mode, bs) for mode in ("full", "kd") for bs in sizes.goal_batch_sizes]
    before = step_options()
    try:
        for label, cfg, mode, bs in plan:
            schedule = b.schedule.replace(batch_size=bs)
            if bs not in loaded:  # the data copied to the device once per batch size, not once per row
                train = make_loaders(b.splits, batch_size=bs, device=b.device, seed=0, crop=schedule.crop)[0]
                loaded[bs] = (train, next(train.batches()))
            train, batch = loaded[bs]
            if not schedule.crop and cache is None:  # built once, as a search's process does ("full": all a kd step reads too)
                cache = TeacherCache(b.teacher, train, "full", num_classes=b.splits.info.num_classes)
            row = {"student": label, "mode": mode, "batch_size": bs, "steps_per_epoch": len(train), "cached_teacher": cache is not None}
            for name, change in variants.items():
                configure_step(dataclasses.replace(before, **change))
                try:
                    step = b.step(mode, schedule=schedule, cache=cache, cfg=cfg)
                    seconds = _seconds_per_call(lambda step=step, batch=batch: step(batch.x, batch.y, index=batch.index, flipped=batch.flipped), sizes, b.device)
                    row[name] = {"seconds_per_step": seconds, "images_per_second": bs / seconds, "epoch_seconds": seconds * len(train)}
                except Exception as e:  # noqa: BLE001 - a failing variant is its row's result
                    row[name] = {"error": one_line(e, 160)}
                finally:
                    reset_finite_checks()
            rows.append(row)
    finally:
        configure_step(before)
    return rows


PARTS = ("breakdown", "graph", "switches", "batch", "compile")


def measure_step(splits, teacher, cfg, schedule, device, sizes: StepSizes, left: Callable[[], float] = lambda: float("inf"), kept: Path | None = None, goal=None, on_kept: Callable[[], None] = lambda: None) -> dict | None:
    """The five parts (module docstring) as JSON-ready data, or None when the call's time
    (``left()``) ran out before every part was done. ``goal``: (label, config) of the batch part's
    goal student. A part starts only if its estimate fits;
    each finished part is written to ``kept``/<part>.json and read back, not remeasured, by the
    next call, and ``on_kept()`` is called (bench.gpu packs). A part that raises ends the section
    (the caller records the failure), the parts before it stay kept."""
    # The product's defaults, whatever ran before in this process: a search run in it (bench-gpu's
    # jobs rows) configures the step of its plan (graph on, say), and the breakdown's eager step
    # and every part's baseline read the process's configuration.
    configure_step(StepOptions())
    b = _Bench(splits, teacher, cfg, schedule, device, goal)
    out = {"batch_size": schedule.batch_size, "steps_per_brief_trial": max(1, len(splits.train) // schedule.batch_size) * schedule.epochs}
    measure = {
        "breakdown": lambda: _breakdown(b, sizes),
        "graph": lambda: _graph(b, sizes, out["breakdown"]["seconds"]["full"]),
        "switches": lambda: _switches(b, sizes),
        "batch": lambda: _batches(b, sizes),
        "compile": lambda: _compile(b, sizes, out["breakdown"]["seconds"]["full"]),
    }
    missing = False
    for part in PARTS:
        path = kept / f"{part}.json" if kept is not None else None
        if path is not None and path.is_file():
            out[part] = json.loads(path.read_text())
            continue
        need = sizes.part_estimate(part)
        if left() < need:  # a later, shorter part may still fit
            print(f"bench-gpu: step: no time for its {part} part in this call (about {need:.0f} s; {left():.0f} s left): the next call measures it", flush=True)
            missing = True
            continue
        if part in ("graph", "compile") and "breakdown" not in out:
            missing = True  # their payback is against the breakdown's eager step
            continue
        started = kept / f"{part}{STARTED}" if kept is not None else None
        if started is not None and started.is_file() and part in KILLED_IS_A_RESULT:
            # An earlier call was killed at the device's limit inside this part (no finally ran to
            # remove the mark): started again, it would end every call the same way.
            out[part] = _killed(part, json.loads(started.read_text()))
            started.unlink()
            print(f"bench-gpu: step: its {part} part killed an earlier call at the device's limit: recorded as such, not run again", flush=True)
        else:
            if started is not None:
                started.parent.mkdir(parents=True, exist_ok=True)
                started.write_text(json.dumps({"seconds_left": left(), "estimate_seconds": need}))
                on_kept()  # packed with the mark: a kill during the part leaves it in the pack
            try:
                out[part] = measure[part]()
            finally:
                if started is not None:
                    started.unlink(missing_ok=True)  # ended, or raised (the next call tries it again)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(out[part], default=str))
            on_kept()
    return None if missing else out


STARTED = ".started.json"  # beside a part's file in ``kept``: the part began and has not ended
# Parts whose kill is recorded as their result (their rows say "failed"); the breakdown and the
# switch table, which the others read, are measured again instead.
KILLED_IS_A_RESULT = ("graph", "batch", "compile")


def _killed(part: str, mark: dict) -> dict | list:
    """The result of a part an earlier call was killed in, shaped as the part's own (its markdown
    renders it as failed rows)."""
    error = f"killed at the call's limit in an earlier call (started with {mark['seconds_left']:.0f} s left, estimated {mark['estimate_seconds']:.0f} s)"
    if part == "batch":
        return [{"student": SECTION_STUDENT, "mode": "full", "batch_size": "-", "eager": {"error": error}}]
    return {f"every {part} variant": {"error": error}}  # graph's and compile's rows share one table


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{1000 * seconds:.2f}"


def step_markdown(r: dict) -> list[str]:
    """The tables of one `measure_step` result."""
    bd, prof = r["breakdown"]["seconds"], r["breakdown"]["profile"]
    busy = "n/a (CPU)" if prof["busy_share"] is None else f"{100 * prof['busy_share']:.0f}%"
    lines = ["**Breakdown** (batch {}; full step: {:.0f} kernel launches, {:.0f} aten ops, device busy {}):".format(r["batch_size"], prof["kernel_launches"], prof["aten_ops"], busy), ""]
    lines += ["| part | ms / step |", "|---|---:|", *[f"| {k} | {_ms(v)} |" for k, v in bd.items()], ""]
    if prof.get("parts"):
        lines += ["**Where the full step's launches go** (per step; aten ops: those called from Python):", "", "| part of the step | kernel launches | aten ops |", "|---|---:|---:|"]
        lines += [f"| {k} | {v['kernel_launches']:.0f} | {v['aten_ops']:.0f} |" for k, v in prof["parts"].items()] + [""]
    sw, new, errors = r["switches"]["seconds"], r["switches"]["new_student_seconds"], r["switches"].get("errors", {})
    threads = f" (the defaults with {r['switches']['threads']} torch threads)" if "threads" in r["switches"] else ""
    lines += [f"**Switches** (full step, one switch changed at a time{threads}; *new student s*: what a trial pays once for its network, building it and its first step, cuDNN's autotuning included; a brief trial has {r['steps_per_brief_trial']} steps):", "", "| switches | ms / step | x defaults | new student s |", "|---|---:|---:|---:|"]
    lines += [f"| {k} | {_ms(v)} | {v / sw['defaults']:.2f} | {new[k]:.2f} |" for k, v in sw.items()]
    lines += [f"| {k} | failed: {e} | | |" for k, e in errors.items()] + [""]
    lines += [f"**Graphs and compile** (against {_ms(bd['full'])} ms eager; a brief trial has {r['steps_per_brief_trial']} steps):", "", "| variant | set-up s | ms / step | steps to pay back |", "|---|---:|---:|---:|"]
    for k, v in {**r["graph"], **r["compile"]}.items():
        if "error" in v:
            lines.append(f"| {k} | failed: {v['error']} | | |")
        else:
            payback = "never" if v["payback_steps"] is None else f"{v['payback_steps']:,.0f}"
            lines.append(f"| {k} | {v['setup_seconds']:.1f} | {_ms(v['seconds'])} | {payback} |")
    rows = r["batch"]
    teacher = "cached" if rows and rows[0].get("cached_teacher") else "live"
    lines += ["", f"**Batch size** (the step as a brief trial runs it, teacher {teacher}; *epoch s*: ms / step x steps per epoch of the training split, a lower bound of a trial's epoch; accuracy at these batches and modes: the standard-brief-cpu sections):", "",
              "| student | mode | batch | step | ms / step | img/s | epoch s |", "|---|---|---:|---|---:|---:|---:|"]
    for row in rows:
        who = f"| {row.get('student', SECTION_STUDENT)} | {row.get('mode', 'full')} | {row['batch_size']} |"
        for name in ("eager", "graph"):
            v = row.get(name)
            if v is None:
                continue
            if "error" in v:
                lines.append(f"{who} {name} | failed: {v['error']} | | |")
            else:
                lines.append(f"{who} {name} | {_ms(v['seconds_per_step'])} | {v['images_per_second']:,.0f} | {v['epoch_seconds']:.2f} |")
    goal_rows = [row for row in rows if row.get("student", SECTION_STUDENT) != SECTION_STUDENT]
    timed = [(row[name]["epoch_seconds"], row, name) for row in goal_rows for name in ("eager", "graph") if "epoch_seconds" in row.get(name, {})]
    if timed:
        best, row, name = min(timed, key=lambda t: t[0])
        under = [f"{rw['mode']} at batch {rw['batch_size']} {nm}" for sec, rw, nm in timed if sec < EPOCH_GOAL_S]
        lines += ["", f"- The {row['student']} student's steady epoch, fastest: {best:.2f} s ({row['mode']}, batch {row['batch_size']}, {name}); under the goal's {EPOCH_GOAL_S} s: "
                  + (", ".join(under) if under else "none") + " (steps alone; the jobs section judges the goal on whole trials)"]
    return lines
