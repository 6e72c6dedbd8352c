"""Ship a trained student: state dict, architecture JSON, TorchScript and ONNX, each checked.

``<dir>/student.pt`` holds the state dict only (read back with ``weights_only=True``);
``arch.json`` holds the `StudentConfig` plus what a user needs to feed the network: input
channels and shape, class count, dataset and the per-channel normalisation (mean/std in [0, 1]
pixel units: ``x = (pixels / 255 - mean) / std``). `load_exported` rebuilds the model from these
two files alone. ``student.ts`` (TorchScript) and ``student.onnx`` (when the ``export`` extra is
installed; batch dimension dynamic) are loaded back and compared with the PyTorch model on a
batch whose size differs from the one they were traced with; the largest absolute logit
difference of each format is written to ``parity.json`` and must stay under `PARITY_TOLERANCE`.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from nas_kd.errors import UserError

__all__ = ["PARITY_TOLERANCE", "ARCH_FORMAT", "export_student", "load_exported", "export_study", "varied_batch"]

PARITY_TOLERANCE = 1e-4  # max |logit difference| between a format and the PyTorch model
ARCH_FORMAT = "nas-kd-student/1"
_TRACE_BATCH, _CHECK_BATCH = 2, 5  # different sizes, so a fixed batch dimension cannot pass


def varied_batch(n: int, shape: tuple[int, ...], g: torch.Generator) -> torch.Tensor:
    """Noise with a per-image scale and offset: after global pooling, plain i.i.d. noise gives
    nearly the same logits for every image, which would make a parity check vacuous."""
    scale = 0.5 + 2 * torch.rand(n, *([1] * len(shape)), generator=g)
    offset = torch.randn(n, *([1] * len(shape)), generator=g)
    return torch.randn(n, *shape, generator=g) * scale + offset


def _max_diff(a, b) -> float:
    return float((torch.as_tensor(a, dtype=torch.float32) - torch.as_tensor(b, dtype=torch.float32)).abs().max())


def _onnx(model: nn.Module, example: torch.Tensor, check: torch.Tensor, expected: torch.Tensor, path: Path) -> float | str:
    """Export to ONNX and return the parity figure, or why ONNX was skipped."""
    try:
        import onnx
        import onnxruntime
    except ImportError:
        return "skipped: install the 'export' extra (onnx, onnxruntime)"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # The TorchScript-based exporter: stable for plain conv nets, no onnxscript graph rewrites.
        torch.onnx.export(model, (example,), str(path), input_names=["input"], output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17, dynamo=False)
    onnx.checker.check_model(onnx.load(str(path)))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(["logits"], {"input": check.numpy()})
    return _max_diff(logits, expected)


def export_student(model: nn.Module, arch: dict, out_dir: str | Path) -> dict:
    """Write all formats of ``model`` (a built student) with ``arch`` (see module docstring) to
    ``out_dir``; return the parity record. Raises if a format disagrees beyond tolerance."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = model.to("cpu").eval()
    shape = tuple(arch["input_shape"])
    g = torch.Generator().manual_seed(0)
    example = varied_batch(_TRACE_BATCH, shape, g)
    check = varied_batch(_CHECK_BATCH, shape, g)
    (out / "arch.json").write_text(json.dumps({"format": ARCH_FORMAT, **arch}, indent=2) + "\n")
    torch.save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, out / "student.pt")
    with torch.no_grad():
        expected = model(check)
        rebuilt, _ = load_exported(out)
        parity: dict[str, float | str] = {"state_dict": _max_diff(rebuilt(check), expected)}
        traced = torch.jit.trace(model, example)
        torch.jit.save(traced, str(out / "student.ts"))
        parity["torchscript"] = _max_diff(torch.jit.load(str(out / "student.ts"))(check), expected)
        parity["onnx"] = _onnx(model, example, check, expected, out / "student.onnx")
    record = {"tolerance": PARITY_TOLERANCE, "batch": _CHECK_BATCH, "max_abs_diff": parity}
    (out / "parity.json").write_text(json.dumps(record, indent=2) + "\n")
    bad = {k: v for k, v in parity.items() if isinstance(v, float) and not v < PARITY_TOLERANCE}
    if bad:
        raise RuntimeError(f"exported formats disagree with the PyTorch model: {bad} (tolerance {PARITY_TOLERANCE})")
    return record


def load_exported(export_dir: str | Path) -> tuple[nn.Module, dict]:
    """Rebuild a student from ``arch.json`` + ``student.pt`` alone; returns (model in eval mode, arch)."""
    from nas_kd.models.student import StudentConfig, build_student

    d = Path(export_dir)
    try:
        arch = json.loads((d / "arch.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"cannot read {d / 'arch.json'} ({e.__class__.__name__}): export the study again with 'nas-kd export'") from None
    if arch.get("format") != ARCH_FORMAT:
        raise UserError(f"{d / 'arch.json'} is not a nas-kd student export (format {arch.get('format')!r})")
    model = build_student(StudentConfig.from_dict(arch["student"]), arch["in_channels"], arch["num_classes"])
    model.load_state_dict(torch.load(d / "student.pt", map_location="cpu", weights_only=True))
    return model.eval(), arch


def export_study(study_name: str, storage: str | None = None, *, log: Callable[[str], None] = print) -> Path:
    """Export a finalized study's winner to ``runs/<study>/export/``."""
    from nas_kd.finalize import FINAL_DIR
    from nas_kd.models.student import StudentConfig, build_student
    from nas_kd.plan import plan_of
    from nas_kd.study import load_study, run_dir

    plan = plan_of(load_study(study_name, storage))
    final_dir = run_dir(study_name) / FINAL_DIR
    if not (final_dir / "final.json").is_file() or not (final_dir / "winner.pt").is_file():
        raise UserError(f"study '{study_name}' has no retrained winner in {final_dir}: run 'nas-kd finalize --study {study_name}' first")
    final = json.loads((final_dir / "final.json").read_text())
    cfg = StudentConfig.from_dict(final["winner"]["config"])
    model = build_student(cfg, plan.input_shape[0], plan.num_classes)
    model.load_state_dict(torch.load(final_dir / "winner.pt", map_location="cpu", weights_only=True))
    arch = {
        "student": cfg.to_dict(),
        "in_channels": plan.input_shape[0],
        "input_shape": list(plan.input_shape),
        "num_classes": plan.num_classes,
        "dataset": plan.dataset,
        "normalisation": final["normalisation"],
        "macs": final["winner"]["macs"],
        "params": final["winner"]["params"],
        "test_accuracy_mean": final["winner"]["test_mean"],
        "study": study_name,
    }
    out = run_dir(study_name) / "export"
    record = export_student(model, arch, out)
    figures = ", ".join(f"{k} {v:.1e}" if isinstance(v, float) else f"{k} {v}" for k, v in record["max_abs_diff"].items())
    log(f"export: {out} (max |diff| {figures})")
    return out
