"""The distiller's whole step captured in a CUDA graph and replayed (``--gpu-step graph=1``).

Why: a tiny student's step is mostly the host's work. The first GPU runs (an H200, 2026-12-04)
measured 1,425 kernel launches per full step of a 0.48M-MAC student and the device busy 12% of
it. A graph pays the launches and the Python once per trial and replays the kernels.

How (PyTorch's whole-network capture recipe, torch.cuda.graphs):
- per value of the ``adversarial`` flag (the student's adversarial terms switch on after a
  warm-up, which changes what the step computes) `WARMUP` steps run eagerly on a side stream
  (optimiser state, cuDNN's autotuning, the allocator settle), then the next step is captured
  on static copies of its inputs and replayed; every later step copies its batch into them and
  replays;
- the learning-rate scheduler steps outside the graph: it fills the SGD groups' device
  learning-rate tensors (`nas_kd.train.build_optimizer`'s ``device_lr``), which the fused kernel
  reads at every replay; the discriminators' Adam is fused and capturable (its step count lives
  on the device; Adam refuses a capture otherwise);
- the NaN/inf check runs outside the graph on the step's returned ``checked`` value, deferred as
  usual (`nas_kd.train.check_finite`);
- autocast's cast cache is off (`nas_kd.device.autocast`);
- a step that cannot be captured (an op graphs cannot record) trains eagerly, said once and
  recorded (`GraphedStep.failure`, the trial's ``step_graph``), where the caller asks for that;
  the stream and the allocator's pool the failed capture held are given back, and later runs in
  the same process train eagerly without trying again.
What the graph freezes is every per-step decision the step makes in Python: the step must keep
its changing state in device tensors (the gates' running accuracies, the logit normaliser's
moments, batch-norm statistics are buffers), which tests/test_graphed.py checks on the CPU with a
backend that replays by re-running the step (`EagerReplay`).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch

from nas_kd.device import graphed_steps
from nas_kd.distill.step import DistillStep, StepResult
from nas_kd.errors import one_line
from nas_kd.train import check_finite

__all__ = ["GraphedStep", "CudaGraphs", "EagerReplay", "WARMUP", "maybe_graphed", "tell_once"]

WARMUP = 3  # eager steps per flag value before its capture (PyTorch's examples use 3 to 11)


class CudaGraphs:
    """Warm-up steps on a side stream and captures with `torch.cuda.CUDAGraph`."""

    def warmup(self, fn: Callable[[], StepResult]) -> StepResult:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side), warnings.catch_warnings():
            # A capturable Adam warns once per optimiser (per trial) when it steps uncaptured, as
            # warm-up steps must: expected here, and a search would print it for every trial.
            warnings.filterwarnings("ignore", message="This instance was constructed with capturable=True")
            result = fn()
        torch.cuda.current_stream().wait_stream(side)
        return result

    def capture(self, fn: Callable[[], StepResult]) -> Callable[[], StepResult]:
        graph = torch.cuda.CUDAGraph()
        pool = torch.cuda.graph_pool_handle()  # named here, so that a failed capture can give it back
        stream = torch.cuda.current_stream()
        try:
            with torch.cuda.graph(graph, pool=pool):
                result = fn()  # recorded, not run: the first replay runs it
        except Exception:
            _undo_failed_capture(stream, pool)
            raise

        def replay() -> StepResult:
            graph.replay()
            return result  # the captured outputs, rewritten in place by every replay

        replay.graph = graph  # kept alive with the replay
        return replay


def _undo_failed_capture(stream, pool) -> None:
    """What `torch.cuda.graph` leaves undone when its capture fails: its exit ends the capture
    before it restores the stream, so a capture_end that raises leaves the capture's side stream
    current for the rest of the process, and the caching allocator still counting a capture
    underway into ``pool`` (every allocation then asks the driver whether its stream is capturing,
    and `torch.cuda.empty_cache` frees nothing while one is). Each undo is guarded: where the
    capture got further than that, there is less to undo and the allocator says so."""
    torch.cuda.set_stream(stream)
    device = stream.device_index
    for undo in (torch._C._cuda_endAllocateToPool, torch._C._cuda_releasePool):
        with contextlib.suppress(Exception):
            undo(device, pool)


class EagerReplay:
    """A stand-in for `CudaGraphs` where there is no GPU: "capture" records the call, "replay"
    runs it again on the static inputs. The schedule around it (warm-up counts, static copies,
    the scheduler and the check outside the step) is what it lets a CPU test."""

    def warmup(self, fn: Callable[[], StepResult]) -> StepResult:
        return fn()

    def capture(self, fn: Callable[[], StepResult]) -> Callable[[], StepResult]:
        return fn


@dataclass
class _Captured:
    inputs: tuple[torch.Tensor | None, ...]  # x, y, index, flipped: the graph reads these buffers
    replay: Callable[[], StepResult]


# Why a capture failed in this process, once one has (with a handler: a trial's). What fails is
# the step's code, the same in every trial, so later trials train eagerly without trying again:
# each attempt costs a device sync and the clean-up of the failed capture.
_process_failure: str | None = None


class GraphedStep:
    """Callable like `DistillStep` (same arguments, same `StepResult`), capturing per flag value."""

    def __init__(self, step: DistillStep, backend: CudaGraphs | EagerReplay | None = None, warmup: int = WARMUP, on_capture_failure: Callable[[Exception], None] | None = None):
        """``on_capture_failure``: None re-raises a failed capture (the bench: a failure is its
        result); a callable is told the error and the run goes on eagerly (a trial: a step that
        cannot be captured, an op graphs do not support, still trains)."""
        self.step, self.backend, self.warmup_steps = step, backend or CudaGraphs(), warmup
        self.on_capture_failure = on_capture_failure
        # The scheduler is stepped here, after each step, outside any capture.
        self.scheduler, step.scheduler = step.scheduler, None
        step.check_inside = False
        self.captured: dict[bool, _Captured] = {}
        self.eager: dict[bool, int] = {}
        self.failure: str | None = None  # why this run fell back to eager steps
        if on_capture_failure is not None and _process_failure is not None:
            self.failure = f"not attempted: a capture failed earlier in this process ({_process_failure})"

    def __getattr__(self, name: str):  # student, objective, optimizer...: the wrapped step's
        return getattr(self.step, name)

    def __call__(self, x: torch.Tensor, y: torch.Tensor, adversarial: bool = True, *, index: torch.Tensor | None = None, flipped: torch.Tensor | None = None) -> StepResult:
        batch = (x, y, index, flipped)
        if self.failure is not None:  # fell back: eager from here on (scheduler and check as before)
            return self._after(self.step(x, y, adversarial, index=index, flipped=flipped))
        c = self.captured.get(adversarial)
        if c is None and self.eager.get(adversarial, 0) < self.warmup_steps:
            self.eager[adversarial] = self.eager.get(adversarial, 0) + 1
            result = self.backend.warmup(lambda: self.step(x, y, adversarial, index=index, flipped=flipped))
            return self._after(result)
        if c is None:
            static = tuple(None if t is None else t.clone() for t in batch)
            sx, sy, si, sf = static
            try:
                replay = self.backend.capture(lambda: self.step(sx, sy, adversarial, index=si, flipped=sf))
            except Exception as e:
                if self.on_capture_failure is None:
                    raise
                # A capture records, it does not run: this batch has not been trained on yet.
                global _process_failure
                self.failure = _process_failure = one_line(e)
                self.on_capture_failure(e)
                return self._after(self.step(x, y, adversarial, index=index, flipped=flipped))
            c = self.captured[adversarial] = _Captured(static, replay)
        else:
            for buffer, t in zip(c.inputs, batch, strict=True):
                if buffer is not None:
                    buffer.copy_(t, non_blocking=True)
        return self._after(c.replay())

    def _after(self, result: StepResult) -> StepResult:
        # A copy: a deferred check keeps the value, and the next replay rewrites the captured one.
        check_finite(result.checked.clone(), "distillation loss")
        if self.scheduler is not None:
            rates = [g["lr"] for g in self.step.optimizer.param_groups]
            self.scheduler.step()
            if self.captured and any(isinstance(r, torch.Tensor) and g["lr"] is not r for g, r in zip(self.step.optimizer.param_groups, rates, strict=True)):
                # A graph reads the rate tensors it was captured with: a scheduler that replaces
                # them (rather than filling them) would leave every replay at the old rate.
                raise RuntimeError("the learning-rate scheduler replaced the optimiser's rate tensors: a captured step would not see the schedule")
        return result


def maybe_graphed(step: DistillStep, device: torch.device, on_capture_failure: Callable[[Exception], None] | None = None) -> DistillStep | GraphedStep:
    """The step as the ``graph`` switch wants it on ``device`` (a CPU trains eagerly);
    ``on_capture_failure``: see `GraphedStep`."""
    return GraphedStep(step, on_capture_failure=on_capture_failure) if graphed_steps(device) else step


_told: set[str] = set()


def tell_once(log: Callable[[str], None] | None) -> Callable[[Exception], None]:
    """The trainer's capture-failure handler: one line per distinct error per process (a search's
    every trial may hit the same one), to ``log`` or standard error."""
    import sys

    def told(e: Exception) -> None:
        line = f"graph: the step could not be captured in a CUDA graph ({one_line(e, 160)}); this run trains eagerly (--gpu-step graph=0 skips the attempt)"
        if line not in _told:
            _told.add(line)
            (log or (lambda m: print(m, file=sys.stderr, flush=True)))(line)

    return told
