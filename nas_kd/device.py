"""Where tensors live and how they are computed: device choice, and the GPU step's switches.

`StepOptions` says how a training step uses a GPU: bf16 autocast, channels_last, cuDNN autotuning,
how often the NaN/inf check may wait for the device (`nas_kd.train.check_finite`), fused
optimisers (one kernel per parameter group instead of several per tensor list), and whether the
distiller's whole step is captured in a CUDA graph and replayed (`nas_kd.distill.graphed`: the
host's launches and Python paid once per trial; implies fused optimisers), and whether a search's
trial processes share the device through an MPS server (`nas_kd.mps`). The last three are off
until a GPU measurement says they pay (the first GPU runs found the step 88% host time). They are
process-wide, like ``torch.backends`` flags (`configure_step`): one search process trains with one
configuration, and `autocast`/`memory_format` read it wherever a step is built. On a CPU only
``check_every`` acts (a CPU always trains channels_last: `memory_format`). What each switch is worth on a GPU: docs/BENCHMARKS.md, section gpu-step.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import platform
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nas_kd.errors import UserError

__all__ = [
    "resolve_device",
    "autocast",
    "torch_threads",
    "one_thread",
    "seed_everything",
    "memory_format",
    "StepOptions",
    "parse_step_options",
    "configure_step",
    "step_options",
    "check_interval",
    "fused_optimisers",
    "graphed_steps",
    "cuda_present",
    "CHECK_EVERY_GPU",
    "emulate_gpu_bf16",
    "cpu_model",
    "device_name",
]

# Steps between host syncs of the NaN/inf check on a GPU. A sync per step stops the host from
# queueing the next step's kernels while the device works, and a tiny student's step is mostly
# kernel launches; a NaN is still caught within this many steps and at every evaluation.
CHECK_EVERY_GPU = 32


@dataclass(frozen=True)
class StepOptions:
    """The GPU step's switches (see the module docstring); ``--gpu-step`` overrides them."""

    bf16: bool = True  # autocast to bfloat16 on CUDA: tensor cores, no loss scaling needed
    channels_last: bool = True  # NHWC activations feed cuDNN's tensor-core kernels without transposes
    benchmark: bool = True  # cuDNN autotunes each new conv shape once (a trial's first steps)
    check_every: int | None = None  # steps between NaN/inf host syncs; None: 1 on a CPU, CHECK_EVERY_GPU on CUDA
    fused: bool = False  # fused SGD and Adam on CUDA (fewer launches per update)
    graph: bool = False  # the distiller's step captured in a CUDA graph per trial (nas_kd.distill.graphed)
    # A search's trial processes share the device through an MPS server it starts (nas_kd.mps):
    # their kernels run at once instead of in turns. Acts where a search runs several processes.
    mps: bool = False

    def describe(self) -> str:
        every = "auto" if self.check_every is None else str(self.check_every)
        return f"bf16={int(self.bf16)},channels_last={int(self.channels_last)},benchmark={int(self.benchmark)},check_every={every},fused={int(self.fused)},graph={int(self.graph)},mps={int(self.mps)}"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


STEP_FORMS = "e.g. --gpu-step bf16=0,channels_last=1,benchmark=1,check_every=32,fused=1,graph=1,mps=1 (switches 0/1, check_every a step count or auto)"


def parse_step_options(text: str | None) -> StepOptions:
    """``bf16=1,channels_last=0,...`` over the defaults; None or "" or "default": the defaults."""
    if text is None or not str(text).strip() or str(text).strip() == "default":
        return StepOptions()
    changes: dict = {}
    for part in str(text).split(","):
        key, sep, value = (s.strip() for s in part.partition("="))
        if key not in StepOptions.__dataclass_fields__ or not sep:
            raise UserError(f"invalid --gpu-step part '{part.strip()}': known switches are {', '.join(StepOptions.__dataclass_fields__)}; {STEP_FORMS}")
        if key == "check_every":
            if value != "auto" and not (value.isdigit() and int(value) >= 1):
                raise UserError(f"invalid --gpu-step check_every={value}: use a step count of 1 or more, or auto; {STEP_FORMS}")
            changes[key] = None if value == "auto" else int(value)
        elif value in ("0", "1"):
            changes[key] = value == "1"
        else:
            raise UserError(f"invalid --gpu-step {key}={value}: switches take 0 or 1; {STEP_FORMS}")
    return dataclasses.replace(StepOptions(), **changes)


_STEP = StepOptions()


def configure_step(options: StepOptions) -> None:
    """Make ``options`` this process's step configuration (see the module docstring)."""
    global _STEP
    _STEP = options
    _apply_backend_flags()


def cuda_present() -> bool:
    """Whether a CUDA GPU is visible, counted through NVML where it can be (torch's
    `torch.cuda.device_count`) so that asking does not initialise CUDA in this process: a search
    sharing the device through MPS must start its server first, since the driver connects to one
    only when CUDA is initialised (`nas_kd.mps`). Where NVML cannot count, torch asks CUDA itself."""
    return torch.cuda.device_count() > 0


def _apply_backend_flags() -> None:
    # Only on a GPU: a CPU process (the tests) keeps torch's own flags.
    if cuda_present():
        torch.backends.cudnn.benchmark = _STEP.benchmark


def step_options() -> StepOptions:
    return _STEP


def cpu_model() -> str:
    """This machine's CPU model as /proc/cpuinfo names it ("AMD EPYC 7B13"), else what Python knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown-cpu"


def device_name(device: torch.device) -> str:
    """What ``device`` is, for the record of something trained on it (a teacher's checkpoint): the
    GPU's name, or the CPU's model, core count and torch thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_model()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}"


def graphed_steps(device: torch.device) -> bool:
    """Whether distillation steps on ``device`` are captured in CUDA graphs (the ``graph`` switch;
    a CPU has no graphs and ignores it, as it ignores bf16)."""
    return device.type == "cuda" and _STEP.graph


def fused_optimisers(device: torch.device) -> bool:
    """Fused SGD/Adam on ``device``: the ``fused`` switch, or ``graph`` (a captured SGD step reads
    its learning rate from a device tensor the scheduler fills, which only the fused kernel does)."""
    return device.type == "cuda" and (_STEP.fused or _STEP.graph)


def check_interval(device: torch.device) -> int:
    """Steps the NaN/inf check may defer its host sync on ``device``: a CPU computes synchronously,
    so deferring saves nothing there unless asked for explicitly."""
    if _STEP.check_every is not None:
        return _STEP.check_every
    return CHECK_EVERY_GPU if device.type == "cuda" else 1


def resolve_device(name: str | None = None) -> torch.device:
    """'auto'/None -> cuda if available else cpu; 'cuda' without a GPU is a UserError."""
    if name in (None, "", "auto"):
        _apply_backend_flags()  # every command resolves its device first: the step's cuDNN flags apply from here
        return torch.device("cuda" if cuda_present() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device '{name}': use auto, cpu or cuda[:N]") from None
    if device.type == "cuda" and not cuda_present():
        raise UserError(f"device '{name}' was asked for but no CUDA GPU is visible: use --device cpu")
    _apply_backend_flags()
    return device


_CPU_BF16 = False  # `emulate_gpu_bf16`: benches only


def emulate_gpu_bf16(on: bool) -> None:
    """Let `autocast` hand a CPU the bfloat16 autocast a GPU step gets by default, so that a CPU
    bench can ask what the GPU's numerics do to accuracy (the CPU's autocast casts the same kinds
    of op: convolutions, linear layers, matmuls; losses stay float32). Never on in the product:
    on most x86 cores bf16 is no faster than fp32 and it costs precision."""
    global _CPU_BF16
    _CPU_BF16 = on


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` intra-op threads. Batch-1 traces and batch-2 test steps are too
    small to split; on a busy 2-core machine OpenMP spin-waiting makes them ~5-50x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def one_thread():
    """`torch_threads` (1): for the teacher-side quantities a run computes once and may share (the
    map scales, the fitted attention), whose float32 reductions would otherwise round differently
    with the number of threads, so that they are the same whoever computes them (a teacher cache
    filled on every core, runs on one thread each)."""
    return torch_threads(1)


def autocast(device: torch.device):
    """bf16 autocast on CUDA (no loss scaling needed for bf16); a no-op on the CPU, where bf16
    matmuls are slower than fp32 on most x86 cores (unless a bench emulates the GPU's numerics:
    `emulate_gpu_bf16`)."""
    if device.type == "cuda" and _STEP.bf16:
        # A captured step must not reuse autocast's cast cache across replays (PyTorch's CUDA
        # graph notes): the cached casts of the weights would be stale after an update.
        return torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=not _STEP.graph)
    if device.type == "cpu" and _CPU_BF16:
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def memory_format(device: torch.device) -> torch.memory_format:
    """channels_last feeds cuDNN's NHWC tensor-core kernels on a GPU (the ``channels_last`` switch).
    The CPU takes it always. Training steps, NCHW time over NHWC time, interleaved medians on the
    idle 2-core x86-64 box, 2026-11-23: one thread, ResNet-20 (batch 256) 1.31x, mbv2 students near
    0.5M and 2M MACs (batch 128) 1.58x and 1.36x; two threads, ResNet-20 1.46x but the students
    0.87x and 0.94x (slower). Most CPU work here runs one thread per process (tests, --jobs,
    benches); a two-thread search of small students pays those 6-13%."""
    if device.type == "cpu":
        return torch.channels_last
    return torch.channels_last if _STEP.channels_last else torch.contiguous_format


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a torch.Generator seeded the same, for data order."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    g = torch.Generator()
    g.manual_seed(seed)
    return g
