"""Latency per image as users will see it: onnxruntime on the exported graph, batch 1, this CPU.

Measurement (`measure_latency`)
-------------------------------
The student is exported exactly as `nas_kd.export` ships it (`Normalised`: raw uint8 pixels in,
logits out, TorchScript-based ONNX exporter, opset 17) and run by onnxruntime's CPU provider with
a fixed thread count (`THREADS`, intra- and inter-op, sequential execution, all graph
optimisations). After `WARMUP` runs, each of at least `RUNS` runs (and more until they span `MIN_SECONDS`) is timed alone; the
figure is the median in milliseconds. Only one process measures at a time on a machine (a file lock next to
the table): two measurements at once would each see the other's load. Latency does not depend
on the weights' values, so an untrained student with seeded weights stands in for a trained one.

Prediction (`LatencyTable`)
---------------------------
A search proposes thousands of students and trains a few: measuring each proposal would cost
more than the repair it serves. The table holds the measured latency of every *part* a student
is made of (the normalisation and stem, each block with its input width and size, output width,
stride, kernel, expansion and squeeze-excitation, and the pooling head), each measured as its
own ONNX graph by the same procedure. One graph run pays a fixed cost (the call into
onnxruntime, input and output copies) that a whole network pays once but a sum of parts would pay
once per part, so that cost is measured too (a graph with a single cheap operator) and taken off
every part but one: ``sum(parts) - (len(parts) - 1) * call``. What this still misses (a chain of
parts shares caches and allocations that separate graphs do not) is taken out by a per-space
calibration: `CALIBRATION_STUDENTS` members of the space (its smallest, its largest and seeded
random ones) are measured whole once, and a straight line ``scale * sum + offset``, fitted by least
squares on relative error, maps the sum to the prediction.

A shared CPU is not one machine over time: its speed drifts with what its neighbours do, by up to
2x over tens of seconds on the 2-core VM this was built on, invisible to the load average. A table
whose entries were each measured at a different speed is inconsistent, and no line fits it (a
table built over a noisy hour put the sum of parts at 0.8-3.0x the measured whole; one built in a
steady ten minutes, 0.8-1.4x: docs/COST.md). So every entry (and every calibration member) is
timed *against a ruler*: a fixed inverted-residual block, run alternately with the part, run for
run, and the entry is the ratio of the two medians. Whatever slows the machine slows both, so
the ratio holds across speeds. A prediction in milliseconds multiplies the table's ratios by the
ruler's own time, measured once per table object (per process) when first needed: the table
predicts what the machine would measure at the speed it has now. A search judges its limits at
the slowest ruler time it has seen instead (`nas_kd.meter`).

The table is built on first use, entry by entry, and cached on disk per machine: under
``$NAS_KD_CACHE`` (default ``~/.cache/nas-kd``) in ``latency/<key>.json``, where the key names the
CPU model, the thread count and the onnxruntime version, so a table never serves another machine
or runtime. How well it predicts (median and 95th-percentile relative error, rank correlation on
random students) and how much repeated measurements jitter is in docs/COST.md, measured with
``python -m bench.latency``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import io
import json
import os
import random
import statistics
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from nas_kd.device import cpu_model
from nas_kd.models.blocks import ConvBNAct, activation_for, make_block, out_size
from nas_kd.models.staged import ClassifierHead
from nas_kd.models.student import StudentConfig, build_student

__all__ = [
    "THREADS",
    "WARMUP",
    "RUNS",
    "Machine",
    "machine",
    "Latency",
    "onnx_bytes",
    "time_graph",
    "measure_latency",
    "measure_module",
    "measure_relative",
    "student_against_ruler",
    "time_against",
    "LatencyTable",
    "cache_dir",
]

THREADS = 1  # onnxruntime intra-op threads: the steadiest figure on a shared CPU, and what a small device has
WARMUP = 20
RUNS = 100
# Timed runs continue until they span at least this long: 100 runs of a 30-microsecond graph last
# 3 ms, one scheduler time slice, so on a shared CPU the whole sample would share one load state.
MIN_SECONDS = 0.2
_SEED = 0  # weights of the stand-in student (latency does not depend on them)
CALIBRATION_STUDENTS = 12  # whole members of a space measured once to fit the table's line
# What table entries are expressed in (module docstring); a cached table in another unit is rebuilt.
RULER = "inverted_residual|16x28x28|w16|s1|k3|e6|se0"


@dataclass(frozen=True)
class Machine:
    """What a latency figure is valid for."""

    cpu: str
    threads: int
    onnxruntime: str

    @property
    def key(self) -> str:
        text = f"{self.cpu}-t{self.threads}-ort{self.onnxruntime}"
        return "".join(ch if ch.isalnum() or ch in ".-" else "_" for ch in text)


def machine(threads: int = THREADS) -> Machine:
    import onnxruntime

    return Machine(cpu=cpu_model(), threads=threads, onnxruntime=onnxruntime.__version__)


def cache_dir() -> Path:
    return Path(os.environ.get("NAS_KD_CACHE") or Path.home() / ".cache" / "nas-kd")


@contextlib.contextmanager
def _one_measurer() -> Iterator[None]:
    """Holds the machine-wide measuring lock: one timing loop at a time (module docstring)."""
    path = cache_dir() / "latency" / "measure.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass(frozen=True)
class Latency:
    """One measurement: the median over ``runs`` timed runs, and its spread; for a student, also
    the ruler's median when timed alternately with it right after (how fast the machine was at
    that moment) and the student's median over the ruler's in that alternated timing: its latency
    in rulers, which the machine's speed does not change."""

    median_ms: float
    p10_ms: float
    p90_ms: float
    runs: int
    threads: int
    cpu: str
    onnxruntime: str
    ruler_ms: float | None = None
    rulers: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def onnx_bytes(module: nn.Module, example: torch.Tensor) -> bytes:
    """``module`` exported as `nas_kd.export` exports students (TorchScript-based exporter, opset
    17, eval mode so BN folds into its conv), in memory."""
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (example,), buffer, input_names=["input"], output_names=["output"], opset_version=17, dynamo=False)
    return buffer.getvalue()


def _session(model: bytes, threads: int):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def time_graph(model: bytes, example: np.ndarray, *, runs: int = RUNS, warmup: int = WARMUP, threads: int = THREADS, min_seconds: float = MIN_SECONDS) -> list[float]:
    """Milliseconds of each timed run of an ONNX graph on ``example`` (at least ``runs``, and
    more until they span ``min_seconds``), after ``warmup`` untimed ones, holding the measuring
    lock."""
    session = _session(model, threads)
    name = session.get_inputs()[0].name
    feed = {name: example}
    times = []
    with _one_measurer():
        for _ in range(warmup):
            session.run(None, feed)
        begin = time.perf_counter()
        while len(times) < runs or time.perf_counter() - begin < min_seconds:
            start = time.perf_counter_ns()
            session.run(None, feed)
            times.append((time.perf_counter_ns() - start) / 1e6)
    return times


def time_against(model: bytes, example: np.ndarray, reference: bytes, reference_example: np.ndarray, *, runs: int = RUNS, warmup: int = WARMUP, threads: int = THREADS, min_seconds: float = MIN_SECONDS) -> tuple[list[float], list[float]]:
    """Milliseconds of each timed run of ``model`` and of ``reference``, run alternately (one of
    each per round, at least ``runs`` rounds spanning ``min_seconds``) so that both see the same
    machine speed; holding the measuring lock."""
    sessions = [_session(model, threads), _session(reference, threads)]
    feeds = [{s.get_inputs()[0].name: x} for s, x in zip(sessions, (example, reference_example), strict=True)]
    times: tuple[list[float], list[float]] = ([], [])
    with _one_measurer():
        for _ in range(warmup):
            for session, feed in zip(sessions, feeds, strict=True):
                session.run(None, feed)
        begin = time.perf_counter()
        while len(times[0]) < runs or time.perf_counter() - begin < min_seconds:
            for session, feed, out in zip(sessions, feeds, times, strict=True):
                start = time.perf_counter_ns()
                session.run(None, feed)
                out.append((time.perf_counter_ns() - start) / 1e6)
    return times


def _ruler() -> tuple[nn.Module, torch.Tensor]:
    """The reference graph of `RULER` (module docstring): one MobileNetV2 block, ~0.14 ms on the 2-core
    VM, built from the same seed every time."""
    torch.manual_seed(_SEED)
    return make_block("inverted_residual", 16, 16, 1, 3, 6, False), torch.randn(1, 16, 28, 28, generator=torch.Generator().manual_seed(_SEED))


def _with_ruler(graph: bytes, example: torch.Tensor, runs: int, threads: int) -> tuple[float, float]:
    """(median ms of ``graph``, median ms of the ruler), the two timed alternately."""
    ruler, ruler_example = _ruler()
    times, ruler_times = time_against(graph, example.numpy(), onnx_bytes(ruler, ruler_example), ruler_example.numpy(), runs=runs, threads=threads)
    return statistics.median(times), statistics.median(ruler_times)


def _against_ruler(module: nn.Module, example: torch.Tensor, runs: int, threads: int) -> tuple[float, float]:
    median, ruler_median = _with_ruler(onnx_bytes(module, example), example, runs, threads)
    return median, median / ruler_median


def measure_relative(module: nn.Module, example: torch.Tensor, *, runs: int = RUNS, threads: int = THREADS) -> float:
    """``module``'s median time over the ruler's median time, the two run alternately."""
    return _against_ruler(module, example, runs, threads)[1]


def _summary(times: list[float], threads: int) -> Latency:
    m = machine(threads)
    deciles = statistics.quantiles(times, n=10)
    return Latency(statistics.median(times), deciles[0], deciles[-1], len(times), threads, m.cpu, m.onnxruntime)


def measure_module(module: nn.Module, example: torch.Tensor, *, runs: int = RUNS, threads: int = THREADS) -> Latency:
    """Latency of any module exported to ONNX, on ``example``."""
    graph = onnx_bytes(module, example)
    return _summary(time_graph(graph, example.numpy(), runs=runs, threads=threads), threads)


def _stand_in(cfg: StudentConfig, input_shape, num_classes: int) -> nn.Module:
    from nas_kd.export import Normalised

    torch.manual_seed(_SEED)
    c = int(input_shape[0])
    return Normalised(build_student(cfg, c, num_classes), [0.5] * c, [0.25] * c)


def _pixels(input_shape) -> torch.Tensor:
    g = torch.Generator().manual_seed(_SEED)
    return torch.randint(0, 256, (1, *map(int, input_shape)), generator=g, dtype=torch.uint8)


def measure_latency(cfg: StudentConfig, input_shape, num_classes: int, *, runs: int = RUNS, threads: int = THREADS) -> Latency:
    """The exported student's latency per image at batch 1 (module docstring), timed alone; then
    timed alternately with the ruler, for the ruler's time at that moment and the student's
    latency in rulers, so that two measurements of one student taken at different times can tell
    a slower machine from a slower student, and a limit can be judged at another speed
    (`nas_kd.meter`)."""
    pixels = _pixels(input_shape)
    graph = onnx_bytes(_stand_in(cfg, input_shape, num_classes), pixels)
    got = _summary(time_graph(graph, pixels.numpy(), runs=runs, threads=threads), threads)
    median, ruler_ms = _with_ruler(graph, pixels, runs, threads)
    return dataclasses.replace(got, ruler_ms=ruler_ms, rulers=median / ruler_ms)


def student_against_ruler(cfg: StudentConfig, input_shape, num_classes: int, *, runs: int = RUNS, threads: int = THREADS) -> tuple[float, float]:
    """(median ms, median in rulers) of the exported student, timed alternately with the ruler."""
    return _against_ruler(_stand_in(cfg, input_shape, num_classes), _pixels(input_shape), runs, threads)


# ------------------------------------------------------------------------------------ prediction


class _Stem(nn.Module):
    """The normalisation and stem of a student: the first part of its exported graph."""

    def __init__(self, cfg: StudentConfig, channels: int):
        super().__init__()
        from nas_kd.export import Normalised

        stem = ConvBNAct(channels, cfg.stem_width, cfg.stem_kernel, cfg.stem_stride, act=activation_for(cfg.block))
        self.body = Normalised(stem, [0.5] * channels, [0.25] * channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class _Call(nn.Module):
    """The cheapest graph that still runs: what one call into onnxruntime costs by itself."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x)


def _parts(cfg: StudentConfig, input_shape, num_classes: int) -> list[tuple[str, object]]:
    """(key, builder) of every part of ``cfg``'s graph, in order; a builder returns (module, example)."""
    c, h, w = (int(v) for v in input_shape)
    parts: list[tuple[str, object]] = [(
        f"stem|{c}x{h}x{w}|{cfg.block}|w{cfg.stem_width}|k{cfg.stem_kernel}|s{cfg.stem_stride}",
        lambda: (_Stem(cfg, c), _pixels((c, h, w))),
    )]
    h, w, width = out_size(h, cfg.stem_stride), out_size(w, cfg.stem_stride), cfg.stem_width
    for s in cfg.stages:
        for j in range(s.depth):
            stride = s.stride if j == 0 else 1
            key = f"{cfg.block}|{width}x{h}x{w}|w{s.width}|s{stride}|k{s.kernel}|e{s.expand}|se{int(s.se)}"
            args = (cfg.block, width, s.width, stride, s.kernel, s.expand, s.se)
            parts.append((key, lambda args=args, shape=(width, h, w): (make_block(*args), torch.randn(1, *shape))))
            h, w, width = out_size(h, stride), out_size(w, stride), s.width
    parts.append((f"head|{width}x{h}x{w}|{num_classes}", lambda shape=(width, h, w): (ClassifierHead(shape[0], num_classes), torch.randn(1, *shape))))
    return parts


class LatencyTable:
    """Per-part latencies of this machine (module docstring), filled on demand and cached."""

    CALL = "call"

    def __init__(self, path: Path | None = None, threads: int = THREADS, runs: int = RUNS):
        self.machine = machine(threads)
        self.path = Path(path) if path is not None else cache_dir() / "latency" / f"{self.machine.key}.json"
        self.threads, self.runs = threads, runs
        self.entries: dict[str, float] = {}  # in rulers: each part's time over the ruler's
        self.calibrations: dict[str, dict] = {}
        # When the cached file was first written: names this table among rebuilt ones (a bench
        # resumes its rows only against the table that predicted them).
        self.created: str | None = None
        self.measured = 0  # entries this object measured (the rest came from the cache)
        self._ruler_ms: float | None = None
        self._load()

    @property
    def ruler_ms(self) -> float:
        """The ruler's median time on this machine now (measured on first use, then kept)."""
        if self._ruler_ms is None:
            ruler, example = _ruler()
            self._ruler_ms = measure_module(ruler, example, runs=self.runs, threads=self.threads).median_ms
        return self._ruler_ms

    def _load(self) -> None:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, json.JSONDecodeError):
            return
        if data.get("machine") == asdict(self.machine) and data.get("unit") == RULER:
            self.entries.update(data.get("entries", {}))
            self.calibrations.update(data.get("calibrations", {}))
            self.created = data.get("created") or self.created

    def _save(self) -> None:
        # Other processes may have added entries meanwhile: merge, then replace atomically.
        entries, calibrations = dict(self.entries), dict(self.calibrations)
        self._load()
        self.entries.update(entries)
        self.calibrations.update(calibrations)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
        self.created = self.created or time.strftime("%Y-%m-%dT%H:%M:%S%z")
        data = {"machine": asdict(self.machine), "unit": RULER, "runs": self.runs, "created": self.created, "entries": self.entries, "calibrations": self.calibrations}
        tmp.write_text(json.dumps(data, indent=0, sort_keys=True))
        tmp.replace(self.path)

    def _entry(self, key: str, build) -> float:
        if key not in self.entries:
            torch.manual_seed(_SEED)
            module, example = build()
            self.entries[key] = measure_relative(module, example, runs=self.runs, threads=self.threads)
            self.measured += 1
            self._save()
        return self.entries[key]

    def call(self) -> float:
        """One call into onnxruntime, in rulers."""
        return self._entry(self.CALL, lambda: (_Call(), torch.zeros(1, 1, 1, 1)))

    def sum_of_parts_rulers(self, cfg: StudentConfig, input_shape, num_classes: int) -> float:
        """Sum of ``cfg``'s parts, less the call overhead of all but one (module docstring), in rulers."""
        parts = _parts(cfg, input_shape, num_classes)
        total = sum(self._entry(key, build) for key, build in parts)
        return total - (len(parts) - 1) * self.call()

    def sum_of_parts(self, cfg: StudentConfig, input_shape, num_classes: int) -> float:
        """`sum_of_parts_rulers` in ms at this machine's speed now."""
        return self.sum_of_parts_rulers(cfg, input_shape, num_classes) * self.ruler_ms

    def calibration(self, space, input_shape, num_classes: int) -> dict:
        """The line of ``space`` on this input (module docstring), in rulers, fitted on first use."""
        shape = tuple(int(v) for v in input_shape)
        decisions = repr((space.block, space.decisions(), [s.stride for s in space.stages], shape, num_classes))
        key = f"{space.name}|{hashlib.sha256(decisions.encode()).hexdigest()[:16]}"
        if key not in self.calibrations:
            rng = random.Random("nas-kd latency calibration")  # never the seeds of evaluations
            members = [space.smallest(), space.largest()] + [space.random_config(rng) for _ in range(CALIBRATION_STUDENTS - 2)]
            sums = [self.sum_of_parts_rulers(c, shape, num_classes) for c in members]
            measured = [student_against_ruler(c, shape, num_classes, runs=self.runs, threads=self.threads)[1] for c in members]
            # Least squares on relative error: rows divided by the measurement.
            design = np.array([[x / y, 1 / y] for x, y in zip(sums, measured, strict=True)])
            (scale, offset), *_ = np.linalg.lstsq(design, np.ones(len(members)), rcond=None)
            self.calibrations[key] = {"scale": float(scale), "offset": float(offset), "students": len(members), "sums_rulers": sums, "measured_rulers": measured}
            self._save()
        return self.calibrations[key]

    def predict_rulers(self, cfg: StudentConfig, input_shape, num_classes: int, space=None) -> float:
        """The prediction in rulers: the sum of parts, mapped through ``space``'s calibration line
        when a space is given."""
        total = self.sum_of_parts_rulers(cfg, input_shape, num_classes)
        if space is None:
            return total
        line = self.calibration(space, input_shape, num_classes)
        return line["scale"] * total + line["offset"]

    def predict(self, cfg: StudentConfig, input_shape, num_classes: int, space=None) -> float:
        """Predicted latency of ``cfg``'s exported graph in ms at this machine's speed now
        (`predict_rulers` x `ruler_ms`)."""
        return self.predict_rulers(cfg, input_shape, num_classes, space) * self.ruler_ms
