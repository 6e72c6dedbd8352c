"""Ship a trained student: state dict, architecture JSON, TorchScript and ONNX, each checked.

Two ways in
-----------
``student.ts`` (TorchScript) and ``student.onnx`` take **raw pixels**: a ``uint8`` tensor
N×C×H×W with values 0..255, the dataset's own layout (`nas_kd.data.Split.x`), batch size free.
The normalisation the student was trained with, ``x = (pixels / 255 - mean) / std`` per channel,
is part of their graph (`Normalised`); they return float32 logits N×K. Any other dtype is
refused (onnxruntime: the input is typed ``tensor(uint8)``; TorchScript: a ``torch.jit.Error``
naming the contract), so a float image in [0, 1] cannot be fed by mistake and misclassified.

``student.pt`` (state dict only, read back with ``weights_only=True``) + ``arch.json`` are for
PyTorch users: `load_exported` rebuilds the bare student, which takes the *normalised* float32
input, as during training. ``arch.json`` holds the `StudentConfig`, input shape, class count,
dataset, the normalisation (mean/std in [0, 1] pixel units), the class names where known, and
``exported_input``: the input contract of the two graphs above. The same contract is stored
inside both graph files (ONNX metadata ``nas_kd_input``; TorchScript extra file
``nas_kd_input.json``) so each one documents itself when it travels alone.

Parity
------
Every format is loaded back and run on a batch of real raw images when the caller passes some
(`export_study` takes a class-balanced 512 from the study's validation split), else on random
pixel images of varied brightness and contrast. The reference is the PyTorch model on the same
images normalised by the training loader (`nas_kd.data.DeviceLoader`), so the check covers the
in-graph normalisation too. ``parity.json`` records per format the class agreement (fraction of
identical argmax) and the largest absolute logit difference; agreement under `MIN_AGREEMENT` or
a difference not under `PARITY_TOLERANCE` is an error.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from nas_kd.errors import UserError

__all__ = [
    "PARITY_TOLERANCE",
    "MIN_AGREEMENT",
    "PARITY_IMAGES",
    "ARCH_FORMAT",
    "CLASS_NAMES",
    "class_names",
    "validation_images",
    "Normalised",
    "input_contract",
    "export_student",
    "load_exported",
    "export_study",
    "random_pixels",
    "varied_batch",
]

PARITY_TOLERANCE = 1e-4  # max |logit difference| between a format and the PyTorch model
MIN_AGREEMENT = 0.999  # least fraction of images whose predicted class a format must share with PyTorch
PARITY_IMAGES = 512  # validation images `export_study` checks the formats on
ARCH_FORMAT = "nas-kd-student/1"
INPUT_NAME, OUTPUT_NAME = "input", "logits"
_TRACE_BATCH, _RANDOM_BATCH = 2, 64  # the check batch differs in size, so a fixed batch dimension cannot pass
_CONTRACT_KEY = "nas_kd_input"

CLASS_NAMES: dict[str, list[str]] = {
    "fashion-mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"],
    "mnist": [str(d) for d in range(10)],
    "cifar10": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
}


class Normalised(nn.Module):
    """``model`` behind the training normalisation: takes uint8 raw pixels N×C×H×W (0..255) and
    feeds ``(pixels / 255 - mean) / std`` (per channel, mean/std in [0, 1] units) to ``model``."""

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        if pixels.dtype != torch.uint8:
            raise TypeError("this model takes raw pixels as uint8 N x C x H x W (0..255); see exported_input in arch.json")
        return self.model((pixels.to(torch.float32) / 255 - self.mean) / self.std)


def input_contract(arch: dict) -> dict:
    """What ``student.ts`` and ``student.onnx`` take and return (stored in ``arch.json`` and in both files)."""
    c, h, w = arch["input_shape"]
    return {
        "files": ["student.ts", "student.onnx"],
        "name": INPUT_NAME,
        "dtype": "uint8",
        "layout": "NCHW",
        "shape": ["N", c, h, w],
        "range": [0, 255],
        "normalisation": "inside the graph: (pixels / 255 - mean) / std, per channel",
        "mean": list(arch["normalisation"]["mean"]),
        "std": list(arch["normalisation"]["std"]),
        "output": {"name": OUTPUT_NAME, "dtype": "float32", "shape": ["N", arch["num_classes"]], "meaning": "logits; argmax is the class, softmax the probabilities"},
        "class_names": class_names(arch),
    }


def class_names(arch: dict) -> list[str] | None:
    """``arch["class_names"]`` if given, else the dataset's where known (`CLASS_NAMES`), else None."""
    return arch.get("class_names") or CLASS_NAMES.get(str(arch.get("dataset", "")).lower())


def validation_images(dataset: str, data_dir: str | None, split_seed: int, n: int = PARITY_IMAGES) -> tuple[torch.Tensor, str]:
    """About ``n`` class-balanced raw uint8 images of a dataset's validation split (the split
    the search used: same ``split_seed``), and a description of them for ``parity.json``."""
    from nas_kd.data import load_splits, stratified_subset

    val = load_splits(dataset, data_dir, seed=split_seed).val
    pick = torch.from_numpy(stratified_subset(val.y.numpy(), n, split_seed))
    return val.x[pick], f"{dataset} validation split (split seed {split_seed}), class-balanced"


def varied_batch(n: int, shape: tuple[int, ...], g: torch.Generator) -> torch.Tensor:
    """Noise with a per-image scale and offset: after global pooling, plain i.i.d. noise gives
    nearly the same logits for every image, which would make a parity check vacuous."""
    scale = 0.5 + 2 * torch.rand(n, *([1] * len(shape)), generator=g)
    offset = torch.randn(n, *([1] * len(shape)), generator=g)
    return torch.randn(n, *shape, generator=g) * scale + offset


def random_pixels(n: int, shape: tuple[int, ...], g: torch.Generator) -> torch.Tensor:
    """`varied_batch` as uint8 raw pixels (brightness and contrast vary per image)."""
    return (varied_batch(n, shape, g) * 40 + 128).round().clamp(0, 255).to(torch.uint8)


def _training_input(pixels: torch.Tensor, mean, std) -> torch.Tensor:
    """``pixels`` normalised exactly as the training and evaluation loaders normalise them."""
    from nas_kd.data import DeviceLoader, Split

    loader = DeviceLoader(Split(pixels, torch.zeros(len(pixels), dtype=torch.long)), batch_size=len(pixels), device="cpu", mean=mean, std=std, train=False)
    ((x, _),) = list(loader)
    return x


def _compare(got, expected: torch.Tensor) -> tuple[float, float]:
    """(fraction of identical argmax, max |logit difference|)."""
    got = torch.as_tensor(got, dtype=torch.float32)
    agreement = float((got.argmax(1) == expected.argmax(1)).float().mean())
    return agreement, float((got - expected).abs().max())


def _onnx(wrapped: Normalised, example: torch.Tensor, pixels: torch.Tensor, contract: str, path: Path):
    """Export to ONNX and return its logits on ``pixels``, or why ONNX was skipped."""
    try:
        import onnx
        import onnxruntime
    except ImportError:
        return "skipped: install the 'export' extra (onnx, onnxruntime)"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # The TorchScript-based exporter: stable for plain conv nets, no onnxscript graph rewrites.
        torch.onnx.export(wrapped, (example,), str(path), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}, opset_version=17, dynamo=False)
    graph = onnx.load(str(path))
    entry = graph.metadata_props.add()
    entry.key, entry.value = _CONTRACT_KEY, contract
    onnx.checker.check_model(graph)
    onnx.save(graph, str(path))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (logits,) = session.run([OUTPUT_NAME], {INPUT_NAME: pixels.numpy()})
    return logits


def export_student(model: nn.Module, arch: dict, out_dir: str | Path, images: torch.Tensor | None = None, *, images_source: str | None = None) -> dict:
    """Write all formats of ``model`` (a built student) with ``arch`` (see module docstring;
    ``normalisation`` is required) to ``out_dir``; return the parity record.

    ``images``: raw uint8 images N×C×H×W to check the formats on (real ones, e.g. validation
    images; ``images_source`` says which, for ``parity.json``); without them, random pixel
    images. Raises if a format disagrees with the PyTorch model (see `MIN_AGREEMENT`,
    `PARITY_TOLERANCE`)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = model.to("cpu").eval()
    shape = tuple(arch["input_shape"])
    mean, std = arch["normalisation"]["mean"], arch["normalisation"]["std"]
    if images is None:
        images = random_pixels(_RANDOM_BATCH, shape, torch.Generator().manual_seed(0))
        images_source = "random pixel images (no real images given)"
    if images.dtype != torch.uint8 or tuple(images.shape[1:]) != shape or len(images) <= _TRACE_BATCH:
        raise ValueError(f"parity images must be uint8 N x {' x '.join(map(str, shape))} with N > {_TRACE_BATCH}, got {images.dtype} {tuple(images.shape)}")
    images = images.cpu().contiguous()
    example = images[:_TRACE_BATCH]
    contract = input_contract(arch)
    contract_text = json.dumps(contract)
    (out / "arch.json").write_text(json.dumps({"format": ARCH_FORMAT, **arch, "exported_input": contract}, indent=2) + "\n")
    torch.save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, out / "student.pt")
    with torch.no_grad():
        x = _training_input(images, mean, std)
        expected = model(x)
        rebuilt, _ = load_exported(out)
        outputs = {"state_dict": rebuilt(x)}
        wrapped = Normalised(model, mean, std).eval()
        # The student is traced; the wrapper is scripted so that its dtype check stays in the file.
        scripted = torch.jit.script(Normalised(torch.jit.trace(model, _training_input(example, mean, std)), mean, std).eval())
        torch.jit.save(scripted, str(out / "student.ts"), _extra_files={f"{_CONTRACT_KEY}.json": contract_text})
        outputs["torchscript"] = torch.jit.load(str(out / "student.ts"))(images)
        outputs["onnx"] = _onnx(wrapped, example, images, contract_text, out / "student.onnx")
    agreement: dict[str, float | str] = {}
    diff: dict[str, float | str] = {}
    for name, got in outputs.items():
        agreement[name], diff[name] = (got, got) if isinstance(got, str) else _compare(got, expected)
    record = {
        "images": len(images),
        "images_source": images_source or "images given by the caller",
        "reference": "the PyTorch model on the same images normalised by the training loader",
        "min_agreement": MIN_AGREEMENT,
        "tolerance": PARITY_TOLERANCE,
        "agreement": agreement,
        "max_abs_diff": diff,
    }
    (out / "parity.json").write_text(json.dumps(record, indent=2) + "\n")
    bad = [f"{k} (agreement {agreement[k]:.4f}, max |diff| {diff[k]:.1e})" for k in outputs if isinstance(diff[k], float) and not (agreement[k] >= MIN_AGREEMENT and diff[k] < PARITY_TOLERANCE)]
    if bad:
        raise RuntimeError(f"exported formats disagree with the PyTorch model on {len(images)} images: {', '.join(bad)}; need agreement >= {MIN_AGREEMENT} and max |diff| < {PARITY_TOLERANCE}")
    return record


def load_exported(export_dir: str | Path) -> tuple[nn.Module, dict]:
    """Rebuild a student from ``arch.json`` + ``student.pt`` alone; returns (model in eval mode,
    arch). The model takes normalised float32 input (``arch["normalisation"]``), not raw pixels."""
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


def export_study(study_name: str, storage: str | None = None, *, log: Callable[[str], None] = print, parity_images: int = PARITY_IMAGES) -> Path:
    """Export a finalized study's winner to ``runs/<study>/export/``, checking every format on
    ``parity_images`` class-balanced images of the study's validation split."""
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
    images, source = validation_images(plan.dataset, plan.data_dir, plan.seeds.split, parity_images)
    record = export_student(model, arch, out, images, images_source=source)
    figures = ", ".join(f"{k} {record['agreement'][k]:.2%} / {v:.1e}" if isinstance(v, float) else f"{k} {v}" for k, v in record["max_abs_diff"].items())
    log(f"export: {out} (on {record['images']} validation images, agreement / max |diff|: {figures})")
    return out
