"""How many ops a distillation step dispatches, by part: on the CPU, what a GPU step launches.

    python -m bench.step_ops [--modes ce,kd,ktan,ksanc,xu,zhang,full] [--students small,large]
        [--batch-size 8] [--steps 30] [--rounds 3] [--baseline REV] [--no-write]

The GPU step of a tiny student is bound by the host (12% device-busy, 1,425 kernel launches per
`full` step of the 0.48M student: docs/BENCHMARKS.md, session 15), so what it costs is roughly
the number of kernels it launches, each a few microseconds of Python and driver on the host, and
each a few microseconds of device time even inside a CUDA graph. No GPU is needed to count them:
every kernel is one aten op reaching a backend, and a `TorchDispatchMode` sees each such op
below autograd (backward ops included), where it would launch. Ops that launch nothing are left
out: views and other aliasing ops, allocations, the profiler's own range markers. The count is a
proxy (a CUDA BN or foreach op may launch more than one kernel; autocast's casts appear only on
a GPU), but it is deterministic, so a change that adds or removes ops shows up exactly, where a
2-core CPU's timings cannot tell 5% apart. The optimisers run as on a GPU (torch's foreach
implementation, its CUDA default; the CPU default loops over parameters), and what a GPU does on
the host is not counted: the discriminators' Adam keeps its step counters on the CPU there, so
adding to them and reading them back (two ops per parameter here) launch nothing.

Alongside the count, CPU time per step at a tiny batch (8 images: per-op overhead dominates, as
on the GPU; one thread, process time, steps interleaved across modes). ``--baseline REV`` measures
a git revision the same way (a temporary worktree, this file's code run against it in a fresh
process, alternating with the working tree for ``--rounds`` rounds): its counts, and the paired
difference in time per round with a 95% t-interval. Students: the mbv2 ones of
`bench.distill_ablation` (closest to 0.5M and 2M MACs); an untrained ResNet-20 teacher (counts and
speed do not depend on its weights), outputs cached as in a search; Fashion-MNIST.

Writes the ``distill-stepops-cpu`` section of docs/BENCHMARKS.md and docs/results/step_ops.json.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import inspect
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from nas_kd.distill.step import PARTS

__all__ = ["OpCount", "count_step_ops", "host_side_tensors", "launches_kernel", "ops_dispatched", "optimisers_as_on_a_gpu"]

# Ops that allocate or annotate but launch no kernel.
_NO_KERNEL = frozenset({"empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "lift_fresh", "_record_function_enter_new", "_record_function_exit", "resize_"})


def launches_kernel(func: torch._ops.OpOverload) -> bool:
    """Whether ``func`` does device work (not a view, aliasing in-place view, allocation or marker)."""
    return not (func.is_view or torch.Tag.inplace_view in func.tags or func.overloadpacket.__name__ in _NO_KERNEL)


@dataclass(frozen=True)
class OpCount:
    """Ops one step dispatched: per part of the step (`nas_kd.distill.step.PARTS`, plus "other"
    for the step's own glue) and per op name."""

    per_part: dict[str, int]
    per_op: dict[str, int]  # most frequent first

    @property
    def total(self) -> int:
        return sum(self.per_part.values())


class _Counter(TorchDispatchMode):
    def __init__(self, host_side: frozenset[int] = frozenset()):
        super().__init__()
        self.host_side = host_side  # ids of tensors that live on the host on a GPU too
        self.part = "other"
        self.per_part: collections.Counter[str] = collections.Counter()
        self.per_op: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if launches_kernel(func) and not self._on_host(args, kwargs):
            name = func.overloadpacket.__name__
            self.per_part[self.part] += 1
            self.per_op[name] += 1
        return func(*args, **(kwargs or {}))

    def _on_host(self, args, kwargs) -> bool:
        """Whether the op works on host-side tensors: its first argument (the tensor or list of
        tensors it reads or updates; a scalar operand beside them is made on the host as well)."""
        first = [t for t in tree_leaves(args[:1]) if isinstance(t, torch.Tensor)]
        return bool(first) and all(id(t) in self.host_side for t in first)


def host_side_tensors(step) -> frozenset[int]:
    """Ids of the step's tensors that a GPU would keep on the host: the step counters of an Adam
    that is neither fused nor capturable (torch keeps them on the CPU, so adding to them and
    reading them back launch nothing on the device; on this CPU they would count 2 ops per
    parameter per step). Call after a step, once the optimisers' state exists."""
    ids = set()
    opt = step.disc_optimizer
    for group in opt.param_groups if isinstance(opt, torch.optim.Adam) else ():
        if not (group.get("fused") or group.get("capturable")):
            ids.update(id(opt.state[p]["step"]) for p in group["params"] if "step" in opt.state.get(p, {}))
    return frozenset(ids)


@contextlib.contextmanager
def _parts_labelled(step, counter: _Counter) -> Iterator[None]:
    """Label the counter with the part of the step running (by wrapping the step's own methods
    on the instance for the duration)."""

    def labelled(part: str, method: Callable) -> Callable:
        def run(*args, **kwargs):
            outer, counter.part = counter.part, part
            try:
                return method(*args, **kwargs)
            finally:
                counter.part = outer

        return run

    for part in PARTS:
        setattr(step, part, labelled(part, getattr(step, part)))
    try:
        yield
    finally:
        for part in PARTS:
            delattr(step, part)  # back to the class's methods


def ops_dispatched(fn: Callable, *args, **kwargs) -> collections.Counter[str]:
    """The ops that launch work, by name, of one call ``fn(*args, **kwargs)``."""
    counter = _Counter()
    with counter:
        fn(*args, **kwargs)
    return counter.per_op


def count_step_ops(step, *args, **kwargs) -> OpCount:
    """Run ``step(*args, **kwargs)`` once (it trains: one real step) and count what it dispatched,
    less what a GPU would do on the host (`host_side_tensors`)."""
    counter = _Counter(host_side_tensors(step))
    with _parts_labelled(step, counter), counter:
        step(*args, **kwargs)
    per_part = {part: counter.per_part.get(part, 0) for part in (*PARTS, "other")}
    return OpCount(per_part, dict(counter.per_op.most_common()))


# --------------------------------------------------------------------------------- the bench
# The worker below may run against another revision's nas_kd (``--baseline``): it imports only
# what has existed since before this file, and this file's own counting code.

MODES = "ce,kd,ktan,ksanc,xu,zhang,full"
RESULTS = Path(__file__).resolve().parent.parent / "docs" / "results" / "step_ops.json"


def optimisers_as_on_a_gpu(step) -> None:
    """The optimisers in torch's foreach implementation, their default on a GPU."""
    for opt in (step.optimizer, step.disc_optimizer):
        for group in opt.param_groups if opt is not None else ():
            if not group.get("fused"):
                group["foreach"] = True


def worker(args) -> dict:
    """Counts and CPU times of the code on ``sys.path`` (module docstring)."""
    from bench._step_timing import interleaved_times, mode_steps
    from bench.distill_ablation import SPACE, pick_students
    from nas_kd.config import get_preset
    from nas_kd.data import load_splits
    from nas_kd.distill import TeacherCache, get_mode
    from nas_kd.models.teachers import build_teacher
    from nas_kd.space import SearchSpace
    from nas_kd.train import make_loaders

    torch.set_num_threads(1)
    cpu = torch.device("cpu")
    modes = args.modes.split(",")
    splits = load_splits("fashion-mnist", seed=0, train_subset=args.batch_size * (args.steps + 3))
    info = splits.info
    brief = get_preset("quick").brief.replace(batch_size=args.batch_size)
    loader = make_loaders(splits, batch_size=args.batch_size, device=cpu, seed=0, crop=brief.crop)[0]
    batches = list(loader.batches())
    torch.manual_seed(0)
    teachers = {recon: build_teacher("resnet20", info.channels, info.num_classes, reconstruction=info.input_shape[1:] if recon else None).eval().requires_grad_(False) for recon in (False, True)}
    caches = {m: TeacherCache(teachers[get_mode(m).needs_reconstruction], loader, m, num_classes=info.num_classes) for m in modes if get_mode(m).uses_teacher}
    students = pick_students(SearchSpace.load(SPACE), info.input_shape, info.num_classes)
    out = {}
    for name in args.students.split(","):
        _, cfg = students[name]
        # A --baseline tree older than the teacher's map scales has no ``loader`` argument.
        extra = {"loader": loader} if "loader" in inspect.signature(mode_steps).parameters else {}
        steps = mode_steps(cfg, teachers, caches, modes, brief, info, len(loader), cpu, **extra)
        for step in steps.values():
            optimisers_as_on_a_gpu(step)
        times = interleaved_times(steps, batches[:-1], cpu)
        last = batches[-1]
        for mode, step in steps.items():
            c = count_step_ops(step, last.x, last.y, index=last.index, flipped=last.flipped)
            # The product turns bf16 autocast on only on a GPU; the CPU's autocast casts the same
            # kinds of op (convolutions, linear layers, matmuls) to bfloat16, so counting under it
            # estimates the cast kernels bf16 adds to a GPU step.
            with torch.autocast("cpu", dtype=torch.bfloat16):
                b = count_step_ops(step, last.x, last.y, index=last.index, flipped=last.flipped)
            casts = b.per_op.get("_to_copy", 0) - c.per_op.get("_to_copy", 0)
            out[f"{name}/{mode}"] = {"ops": c.total, "per_part": c.per_part, "per_op": c.per_op, "ms": 1000 * statistics.median(times[mode]), "ops_bf16": b.total, "casts_bf16": casts}
    return out


def _run_worker(tree: Path, args, out: Path) -> dict:
    """This file's worker in a fresh process, against the nas_kd and bench of ``tree``."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", str(out), "--modes", args.modes, "--students", args.students, "--batch-size", str(args.batch_size), "--steps", str(args.steps)]
    subprocess.run(cmd, env=env, cwd=tree, check=True)
    return json.loads(out.read_text())


def measure(args) -> dict:
    """Per round and tree ("current", and "baseline" with ``--baseline``), the worker's figures."""
    here = Path(__file__).resolve().parent.parent
    rounds: dict[str, list[dict]] = {"current": []}
    with tempfile.TemporaryDirectory(prefix="step_ops-") as tmp:
        trees = {"current": here}
        if args.baseline:
            trees["baseline"] = Path(tmp) / "baseline"
            subprocess.run(["git", "-C", str(here), "worktree", "add", "--detach", "-q", str(trees["baseline"]), args.baseline], check=True)
            rounds["baseline"] = []
        try:
            for r in range(args.rounds):
                # Alternate which tree runs first: whatever drifts over a round hits both alike.
                for name in sorted(trees, reverse=r % 2 == 1):
                    rounds[name].append(_run_worker(trees[name], args, Path(tmp) / f"{name}-{r}.json"))
                    print(f"step_ops: round {r + 1}/{args.rounds} {name} done", file=sys.stderr, flush=True)
        finally:
            if args.baseline:
                subprocess.run(["git", "-C", str(here), "worktree", "remove", "--force", str(trees["baseline"])], check=False)
    return rounds


def markdown(args, rounds: dict[str, list[dict]], argv: list[str]) -> str:
    from bench._report import hardware
    from nas_kd.stats import paired_difference

    current, baseline = rounds["current"], rounds.get("baseline")
    keys = list(current[0])
    parts = list(current[0][keys[0]]["per_part"])
    head = "| student | mode | ops / step | " + " | ".join(parts) + " | under bf16 autocast (casts) |"
    rows = [head, "|---|---|---:|" + "---:|" * len(parts) + "---:|"]
    for key in keys:
        name, mode = key.split("/")
        c = current[0][key]
        bf16 = f"{c['ops_bf16']} ({c['casts_bf16']:+d}, {100 * (c['ops_bf16'] - c['ops']) / c['ops']:+.0f}%)" if "ops_bf16" in c else "-"
        rows.append(f"| {name} | {mode} | {c['ops']} | " + " | ".join(str(c["per_part"][p]) for p in parts) + f" | {bf16} |")
    lines = [
        "## Distiller step: ops dispatched per step, what a GPU launches (CPU count)",
        "",
        f"Command: `python -m bench.step_ops {' '.join(argv)}`  ",
        f"Hardware: {hardware()}; 1 torch thread  ",
        f"Fashion-MNIST, batch {args.batch_size}, an untrained ResNet-20 teacher with its outputs cached, the mbv2 students of bench.distill_ablation; "
        "one step counted after the timed ones (`bench/step_ops.py`: aten ops below autograd that launch work, views and allocations left out; "
        "optimisers in torch's foreach implementation, as on a GPU, and the Adam's step counters, which a GPU keeps on the host, left out). Deterministic: every round counts the same. "
        "*Under bf16 autocast*: the same step counted once more inside the CPU's bfloat16 autocast, which casts the same kinds of op as the GPU's "
        "(convolutions, linear layers, matmuls): an estimate of the cast kernels the GPU default (`--gpu-step bf16=1`) adds to a launch-bound step.",
        "",
        *rows,
    ]
    if baseline:
        lines += [
            "",
            f"Against `{args.baseline}` (the same counter and timing run on that revision; {len(current)} rounds, alternating; "
            f"CPU ms per step at batch {args.batch_size}, median of {args.steps} steps per round; difference = current - baseline, paired by round, 95% t-interval):",
            "",
            "| student | mode | baseline ops | ops | change | baseline ms | ms | ms difference [95% CI] |",
            "|---|---|---:|---:|---:|---:|---:|---|",
        ]
        for key in keys:
            if key not in baseline[0]:
                continue
            name, mode = key.split("/")
            b_ops, c_ops = baseline[0][key]["ops"], current[0][key]["ops"]
            b_ms = {r: x[key]["ms"] for r, x in enumerate(baseline)}
            c_ms = {r: x[key]["ms"] for r, x in enumerate(current)}
            d = paired_difference(c_ms, b_ms)
            ci = f"{d.mean:+.2f} [{d.low:+.2f}, {d.high:+.2f}]" if d.low is not None else f"{d.mean:+.2f}"
            lines.append(
                f"| {name} | {mode} | {b_ops} | {c_ops} | {100 * (c_ops - b_ops) / b_ops:+.1f}% | {statistics.fmean(b_ms.values()):.2f} | {statistics.fmean(c_ms.values()):.2f} | {ci} |"
            )
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modes", default=MODES)
    ap.add_argument("--students", default="small,large")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--steps", type=int, default=30, help="timed steps per mode and round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--baseline", help="a git revision to compare with (counted and timed the same way)")
    ap.add_argument("--no-write", action="store_true", help="print the table only")
    ap.add_argument("--worker", help=argparse.SUPPRESS)  # internal: measure this tree, write JSON here
    args = ap.parse_args(argv)
    if args.worker:
        Path(args.worker).write_text(json.dumps(worker(args)))
        return
    argv = list(sys.argv[1:] if argv is None else argv)
    here = Path(__file__).resolve().parent.parent
    if args.baseline and subprocess.run(["git", "-C", str(here), "rev-parse", "--verify", "-q", f"{args.baseline}^{{commit}}"], capture_output=True).returncode != 0:
        print(f"step_ops: --baseline {args.baseline} is not a commit of this repository: give a hash, branch or tag (git log --oneline)", file=sys.stderr)
        raise SystemExit(2)
    try:
        rounds = measure(args)
    except subprocess.CalledProcessError as e:
        print(f"step_ops: a measurement failed ({' '.join(map(str, e.cmd[:4]))} ... exited {e.returncode}; its output is above)", file=sys.stderr)
        raise SystemExit(1) from None
    body = markdown(args, rounds, argv)
    print(body)
    if not args.no_write:
        from bench._report import write_section

        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps({"command": f"python -m bench.step_ops {' '.join(argv)}", "baseline": args.baseline, "rounds": rounds}, indent=1))
        write_section("distill-stepops-cpu", body)


if __name__ == "__main__":
    main()
