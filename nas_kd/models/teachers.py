"""Teachers: a small registry, the optional reconstruction head, training and the on-disk cache.

Registry names
--------------
``resnet<D>`` / ``resnet<D>x<W>``
    CIFAR-style ResNet (He et al. 2016): D = 6n+2 (20, 32, 44, 56, 110), three stages of n basic
    blocks with 16W, 32W, 64W channels, strides 1, 2, 2.
``wrn-<D>-<K>`` (also ``wrn<D>-<K>``)
    Wide ResNet (Zagoruyko & Komodakis 2016): D = 6n+4, pre-activation blocks, widths 16K, 32K, 64K.
``tv:<name>``
    A torchvision classification model (needs the ``vision`` extra). ResNets expose their four
    ``layer`` stages; their stem is adapted to small inputs (3×3 stride-1 conv, no max-pool) and
    grey images are repeated to three channels.
a ``.ts``/``.pt`` TorchScript file
    A user's scripted model. If it defines ``forward_stages(x) -> (List[Tensor], Tensor)`` the
    feature-matching modes can use it, otherwise only logit-based modes (``kd``, ``xu``).

All registry teachers are `StagedNet`s: stage maps + logits through one interface that students
share. Inputs of any size from 8×8 work (stride 4 in total for the CIFAR families).

Checkpoints (``runs/teachers/<key>.pt``) hold ``{"format", "state_dict", "meta"}`` with plain
types only, are written atomically (temp file + rename) and are read with ``weights_only=True``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import re
import time
import warnings
import zipfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from nas_kd.config import Schedule
from nas_kd.data import DatasetInfo, Splits, dataset_slug
from nas_kd.device import autocast, memory_format, seed_everything
from nas_kd.errors import UserError
from nas_kd.models.staged import ClassifierHead, StagedNet

__all__ = [
    "build_teacher",
    "parse_arch",
    "ReconstructionDecoder",
    "ScriptedTeacher",
    "train_teacher",
    "teacher_key",
    "save_teacher",
    "load_teacher",
    "ensure_teacher",
    "resolve_teacher",
    "is_teacher_path",
    "teacher_meta",
    "CHECKPOINT_FORMAT",
    "TEACHER_DIR",
]

CHECKPOINT_FORMAT = "nas-kd-teacher/1"
TEACHER_DIR = Path("runs") / "teachers"


# --------------------------------------------------------------------------- CIFAR families


def _conv_bn(cin: int, cout: int, k: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout))


class _BasicBlock(nn.Module):
    """Post-activation residual block: conv-BN-ReLU-conv-BN + shortcut, ReLU."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(_conv_bn(cin, cout, 3, stride), nn.ReLU(inplace=True), _conv_bn(cout, cout, 3, 1))
        self.shortcut = _conv_bn(cin, cout, 1, stride) if stride != 1 or cin != cout else nn.Identity()

    def forward(self, x):
        return F.relu(self.body(x) + self.shortcut(x))


class _PreActBlock(nn.Module):
    """Wide-ResNet block: BN-ReLU-conv-BN-ReLU-(dropout)-conv + shortcut."""

    def __init__(self, cin: int, cout: int, stride: int, dropout: float = 0.0):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(cout), nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.shortcut = nn.Conv2d(cin, cout, 1, stride, bias=False) if stride != 1 or cin != cout else None

    def forward(self, x):
        o = F.relu(self.bn1(x))
        skip = self.shortcut(o) if self.shortcut is not None else x
        o = self.conv2(self.dropout(F.relu(self.bn2(self.conv1(o)))))
        return o + skip


class CifarResNet(StagedNet):
    def __init__(self, depth: int, width: int, in_channels: int, num_classes: int):
        super().__init__()
        n = (depth - 2) // 6
        widths = [16 * width, 32 * width, 64 * width]
        self.stem = nn.Sequential(_conv_bn(in_channels, widths[0], 3, 1), nn.ReLU(inplace=True))
        stages, cin = [], widths[0]
        for i, w in enumerate(widths):
            blocks = [_BasicBlock(cin if j == 0 else w, w, (1 if i == 0 else 2) if j == 0 else 1) for j in range(n)]
            stages.append(nn.Sequential(*blocks))
            cin = w
        self.stages = nn.ModuleList(stages)
        self.head = ClassifierHead(cin, num_classes)
        self.stage_channels, self.num_classes = tuple(widths), num_classes
        _init(self)


class WideResNet(StagedNet):
    def __init__(self, depth: int, k: int, in_channels: int, num_classes: int, dropout: float = 0.0):
        super().__init__()
        n = (depth - 4) // 6
        widths = [16 * k, 32 * k, 64 * k]
        self.stem = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        stages, cin = [], 16
        for i, w in enumerate(widths):
            blocks: list[nn.Module] = [_PreActBlock(cin if j == 0 else w, w, (1 if i == 0 else 2) if j == 0 else 1, dropout) for j in range(n)]
            if i == len(widths) - 1:
                # The final BN-ReLU belongs to the last stage so the tapped map is activated,
                # like every other stage's output the distiller sees.
                blocks += [nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
            stages.append(nn.Sequential(*blocks))
            cin = w
        self.stages = nn.ModuleList(stages)
        self.head = ClassifierHead(cin, num_classes)
        self.stage_channels, self.num_classes = tuple(widths), num_classes
        _init(self)


def _init(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    # Zero the last BN of each residual branch: every block starts as identity (Goyal et al.),
    # which makes the short CPU schedules noticeably more stable.
    for m in model.modules():
        if isinstance(m, _BasicBlock):
            nn.init.zeros_(m.body[-1][1].weight)


# --------------------------------------------------------------------------- torchvision & TorchScript


class _TorchvisionResNet(StagedNet):
    def __init__(self, net: nn.Module, in_channels: int, num_classes: int):
        super().__init__()
        c1 = net.conv1.out_channels
        # Small inputs (28-32 px) lose everything to a 7×7/2 conv plus max-pool: use the CIFAR stem.
        self.stem = nn.Sequential(nn.Conv2d(in_channels, c1, 3, 1, 1, bias=False), net.bn1, net.relu)
        self.stages = nn.ModuleList([net.layer1, net.layer2, net.layer3, net.layer4])
        chans = []
        for layer in self.stages:
            last = layer[-1]
            chans.append((last.bn3 if hasattr(last, "bn3") else last.bn2).num_features)
        self.head = ClassifierHead(chans[-1], num_classes)
        self.stage_channels, self.num_classes = tuple(chans), num_classes


def _no_stage_maps():
    raise UserError("this teacher exposes no stage feature maps: use a logit-only mode (kd, xu) or a registry teacher (resnet20, wrn-16-4, tv:resnet18)")


class _LogitsOnly(nn.Module):
    """A model whose internals nas-kd cannot tap: logits only."""

    stage_channels: tuple[int, ...] = ()

    def __init__(self, net: nn.Module, repeat_channels: int, num_classes: int):
        super().__init__()
        self.net, self.repeat, self.num_classes = net, repeat_channels, num_classes

    def forward(self, x):
        return self.net(x.expand(-1, self.repeat, -1, -1) if self.repeat > x.shape[1] else x)

    def forward_stages(self, x):
        _no_stage_maps()


def _torchvision_teacher(name: str, in_channels: int, num_classes: int) -> nn.Module:
    try:
        import torchvision.models as tvm
    except Exception as e:  # torchvision raises RuntimeError, not ImportError, on mismatched torch
        raise UserError(f"teacher 'tv:{name}' needs torchvision, which does not import here ({e.__class__.__name__}): pip install 'nas-kd[vision]' with a matching torch") from None
    try:
        net = tvm.get_model(name, weights=None, num_classes=num_classes)
    except Exception:
        raise UserError(f"unknown torchvision model '{name}': see torchvision.models.list_models()") from None
    if all(hasattr(net, f"layer{i}") for i in range(1, 5)) and hasattr(net, "conv1"):
        return _TorchvisionResNet(net, in_channels, num_classes)
    return _LogitsOnly(net, 3, num_classes)


class ScriptedTeacher(nn.Module):
    """A user's TorchScript model behind the teacher interface."""

    def __init__(self, module: torch.jit.ScriptModule, input_shape: tuple[int, int, int], num_classes: int):
        super().__init__()
        self.module = module
        self.num_classes = num_classes
        self.has_stages = hasattr(module, "forward_stages")
        probe = torch.zeros(2, *input_shape)
        with torch.inference_mode():
            logits = module(probe)
            if logits.ndim != 2 or logits.shape[1] != num_classes:
                raise UserError(f"TorchScript teacher returns logits of shape {tuple(logits.shape)} for input {tuple(probe.shape)}, expected (2, {num_classes}): export it for this dataset")
            self.stage_channels = tuple(m.shape[1] for m in module.forward_stages(probe)[0]) if self.has_stages else ()

    def forward(self, x):
        return self.module(x)

    def forward_stages(self, x):
        if not self.has_stages:
            _no_stage_maps()
        maps, logits = self.module.forward_stages(x)
        return list(maps), logits


# --------------------------------------------------------------------------- registry

_RESNET_RE = re.compile(r"^resnet(\d+)(?:x(\d+))?$")
_WRN_RE = re.compile(r"^wrn-?(\d+)-(\d+)$")
EXAMPLES = "resnet20, resnet56, resnet20x2, wrn-16-4, tv:resnet18"


def parse_arch(arch: str) -> str:
    """Canonical spelling of a registry name, or a UserError listing examples."""
    a = (arch or "").strip().lower()
    if m := _RESNET_RE.match(a):
        depth, width = int(m.group(1)), int(m.group(2) or 1)
        if (depth - 2) % 6 or depth < 8 or not 1 <= width <= 16:
            raise UserError(f"invalid teacher '{arch}': resnet depth must be 6n+2 (8, 14, 20, 32, 44, 56, 110) and width 1..16")
        return f"resnet{depth}" + (f"x{width}" if width > 1 else "")
    if m := _WRN_RE.match(a):
        depth, k = int(m.group(1)), int(m.group(2))
        if (depth - 4) % 6 or depth < 10 or not 1 <= k <= 16:
            raise UserError(f"invalid teacher '{arch}': WRN depth must be 6n+4 (10, 16, 22, 28, 40) and k 1..16")
        return f"wrn-{depth}-{k}"
    if a.startswith("tv:") and len(a) > 3:
        return a
    raise UserError(f"unknown teacher '{arch}': use a registry name ({EXAMPLES}) or a TorchScript file path")


def build_teacher(arch: str, in_channels: int, num_classes: int, reconstruction: tuple[int, int] | None = None) -> nn.Module:
    """A fresh teacher; ``reconstruction=(H, W)`` adds a decoder head (``model.decoder``)."""
    arch = parse_arch(arch)
    if m := _RESNET_RE.match(arch):
        net: nn.Module = CifarResNet(int(m.group(1)), int(m.group(2) or 1), in_channels, num_classes)
    elif m := _WRN_RE.match(arch):
        net = WideResNet(int(m.group(1)), int(m.group(2)), in_channels, num_classes)
    else:
        net = _torchvision_teacher(arch[3:], in_channels, num_classes)
    net.decoder = ReconstructionDecoder(net.stage_channels[-1], in_channels, reconstruction) if reconstruction else None
    return net


class ReconstructionDecoder(nn.Module):
    """Small decoder from the deepest stage map back to the (normalised) image.

    Zhang et al. train the teacher for classification *and* reconstruction so that its features
    carry generative information too. Their decoder is unpublished; ours: three
    upsample-conv-BN-ReLU steps that halve the channels, a resize to the exact input size, and a
    3×3 conv to the image channels (our choice, documented in docs/DISTILLER.md).
    """

    def __init__(self, in_channels: int, out_channels: int, size: tuple[int, int]):
        super().__init__()
        self.size = tuple(size)
        layers, c = [], in_channels
        for _ in range(3):
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c, max(16, c // 2), 3, 1, 1, bias=False), nn.BatchNorm2d(max(16, c // 2)), nn.ReLU(inplace=True)]
            c = max(16, c // 2)
        self.body = nn.Sequential(*layers)
        self.out = nn.Conv2d(c, out_channels, 3, 1, 1)

    def forward(self, x):
        return self.out(F.interpolate(self.body(x), size=self.size, mode="bilinear", align_corners=False))


# --------------------------------------------------------------------------- training


def train_teacher(
    model: nn.Module,
    splits: Splits,
    schedule: Schedule,
    *,
    device: torch.device,
    seed: int = 0,
    recon_weight: float = 1.0,
    show_progress: bool | None = None,
    log=print,
) -> dict:
    """Cross-entropy (+ reconstruction MSE when the model has a decoder); returns metrics.

    One flat loop: device-resident batches, SGD + warm-up/cosine per step, bf16 autocast and
    channels_last on the GPU. Validation accuracy is logged per epoch; test accuracy once at the end.
    """
    from nas_kd.train import build_optimizer, build_scheduler, check_finite, evaluate, make_loaders, progress

    seed_everything(seed)
    model.to(device, memory_format=memory_format(device)).train()
    train_dl, val_dl, test_dl = make_loaders(splits, batch_size=schedule.batch_size, device=device, seed=seed, crop=schedule.crop)
    opt = build_optimizer(model.named_parameters(), schedule)
    sched = build_scheduler(opt, schedule, len(train_dl))
    decoder = getattr(model, "decoder", None)
    history, t0, seen = [], time.perf_counter(), 0
    for epoch in range(schedule.epochs):
        for x, y in progress(train_dl, total=len(train_dl), desc=f"teacher epoch {epoch + 1}/{schedule.epochs}", enabled=show_progress):
            with autocast(device):
                if decoder is not None:
                    maps, logits = model.forward_stages(x)
                    loss = F.cross_entropy(logits, y, label_smoothing=schedule.label_smoothing)
                    loss = loss + recon_weight * F.mse_loss(decoder(maps[-1]).float(), x)
                else:
                    loss = F.cross_entropy(model(x), y, label_smoothing=schedule.label_smoothing)
            check_finite(loss, "teacher loss")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            seen += len(y)
        val_acc = evaluate(model, val_dl)
        history.append({"epoch": epoch + 1, "val_accuracy": val_acc, "seconds": time.perf_counter() - t0})
        log(f"teacher epoch {epoch + 1}/{schedule.epochs}: val accuracy {val_acc:.4f} ({time.perf_counter() - t0:.1f}s)")
    if device.type == "cuda":
        torch.cuda.synchronize()
    train_seconds = time.perf_counter() - t0
    return {
        "val_accuracy": history[-1]["val_accuracy"],
        "test_accuracy": evaluate(model, test_dl),
        "train_seconds": train_seconds,
        "images_per_second": seen / max(train_seconds, 1e-9),
        "history": history,
    }


# --------------------------------------------------------------------------- the cache


def teacher_key(dataset: str, arch: str, schedule: Schedule, seed: int, reconstruction: bool) -> str:
    """Readable and unique: dataset, arch, recon flag, seed and a hash of the exact recipe."""
    recipe = hashlib.sha1(json.dumps(dataclasses.asdict(schedule), sort_keys=True).encode()).hexdigest()[:8]
    return f"{dataset_slug(dataset)}_{parse_arch(arch).replace(':', '-')}{'_recon' if reconstruction else ''}_s{seed}_{recipe}"


def save_teacher(path: str | os.PathLike, model: nn.Module, meta: dict) -> Path:
    """Atomically write ``{"format", "state_dict", "meta"}``: temp file in the same folder, fsync, rename."""
    from nas_kd.files import atomic_write

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return atomic_write(path, lambda f: torch.save({"format": CHECKPOINT_FORMAT, "state_dict": state, "meta": meta}, f))


def teacher_meta(info: DatasetInfo, arch: str, schedule: Schedule, seed: int, reconstruction: bool, metrics: dict, preset: str) -> dict:
    import nas_kd

    return {
        "dataset": info.name,
        "num_classes": info.num_classes,
        "input_shape": list(info.input_shape),
        "arch": parse_arch(arch),
        "reconstruction": bool(reconstruction),
        "preset": preset,
        "recipe": dataclasses.asdict(schedule),
        "seed": seed,
        "val_accuracy": metrics["val_accuracy"],
        "test_accuracy": metrics["test_accuracy"],
        "train_seconds": metrics["train_seconds"],
        "images_per_second": metrics["images_per_second"],
        "history": metrics["history"],
        "versions": {"nas_kd": nas_kd.__version__, "torch": str(torch.__version__), "python": platform.python_version()},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def _is_torchscript(path: Path) -> bool:
    """TorchScript archives carry a ``code/`` folder; ``torch.save`` archives never do."""
    try:
        with zipfile.ZipFile(path) as z:
            return any("/code/" in n for n in z.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def load_teacher(path: str | os.PathLike, info: DatasetInfo, device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """Load a cached teacher (or a TorchScript file) for ``info``; frozen, in eval mode.

    Refuses, with a one-line `UserError`, a file that is missing, not weights-only (a pickle that
    would run code is never unpickled), not a nas-kd teacher, or made for another dataset,
    class count or input shape.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"teacher file '{path}' does not exist: train one with 'nas-kd teacher --dataset {info.name}' or pass an existing path")
    if _is_torchscript(path):
        try:
            module = torch.jit.load(str(path), map_location="cpu")
        except Exception as e:
            raise UserError(f"'{path}' is not a loadable TorchScript file ({e.__class__.__name__}): save it with torch.jit.save(torch.jit.script(model), path)") from None
        model: nn.Module = ScriptedTeacher(module, info.input_shape, info.num_classes)
        meta = {"arch": f"torchscript:{path.name}", "dataset": info.name, "num_classes": info.num_classes, "input_shape": list(info.input_shape), "reconstruction": False}
    else:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # e.g. torch's note on pickle protocols: noise for a user
                ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            found = re.search(r"GLOBAL ([\w.]+)", str(e))
            why = f"it would import {found.group(1)}" if found else f"{e.__class__.__name__}: not a torch.save file of tensors and plain data"
            raise UserError(f"refusing to load '{path}': it is not a weights-only nas-kd checkpoint ({why}); train a teacher with 'nas-kd teacher'") from None
        if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT or not isinstance(ckpt.get("meta"), dict):
            raise UserError(f"'{path}' is not a nas-kd teacher checkpoint (no '{CHECKPOINT_FORMAT}' header): train one with 'nas-kd teacher'")
        meta = ckpt["meta"]
        _check_compatible(path, meta, info)
        recon = tuple(meta["input_shape"][1:]) if meta.get("reconstruction") else None
        model = build_teacher(meta["arch"], info.channels, info.num_classes, reconstruction=recon)
        try:
            model.load_state_dict(ckpt["state_dict"])
        except (RuntimeError, KeyError, TypeError) as e:
            raise UserError(f"'{path}' does not match architecture {meta.get('arch')} ({str(e).splitlines()[0][:120]}): the file is damaged; train the teacher again") from None
    model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, meta


def _check_compatible(path: Path, meta: dict, info: DatasetInfo) -> None:
    theirs = f"'{meta.get('dataset')}' ({meta.get('num_classes')} classes, input {tuple(meta.get('input_shape') or ())})"
    ours = f"'{info.name}' ({info.num_classes} classes, input {info.input_shape})"
    if meta.get("num_classes") != info.num_classes or tuple(meta.get("input_shape") or ()) != info.input_shape or meta.get("dataset") != info.name:
        raise UserError(f"teacher '{path}' was trained on {theirs} but the data is {ours}: train a teacher for it with 'nas-kd teacher --dataset {info.name}'")


def ensure_teacher(
    dataset: str,
    arch: str,
    schedule: Schedule,
    *,
    preset: str,
    seed: int = 0,
    device: torch.device,
    data_dir=None,
    reconstruction: bool = False,
    root: str | os.PathLike = TEACHER_DIR,
    log=print,
) -> tuple[nn.Module, dict, Path]:
    """The cached teacher for (dataset, arch, recipe, seed, reconstruction): loaded if its file
    exists, otherwise trained, evaluated on the test set and saved atomically first."""
    from nas_kd.data import load_splits

    path = Path(root) / f"{teacher_key(dataset, arch, schedule, seed, reconstruction)}.pt"
    if path.is_file():
        from nas_kd.data import dataset_info

        model, meta = load_teacher(path, dataset_info(dataset, data_dir), device)
        log(f"teacher: reusing {path} ({meta['arch']}, test accuracy {meta['test_accuracy']:.4f})")
        return model, meta, path
    splits = load_splits(dataset, data_dir, seed=seed, train_subset=schedule.train_subset)
    info = splits.info
    model = build_teacher(arch, info.channels, info.num_classes, reconstruction=(info.height, info.width) if reconstruction else None)
    log(f"teacher: training {parse_arch(arch)} on {info.name} ({len(splits.train)} examples, {schedule.epochs} epochs, device {device.type})")
    metrics = train_teacher(model, splits, schedule, device=device, seed=seed, log=log)
    meta = teacher_meta(info, arch, schedule, seed, reconstruction, metrics, preset)
    save_teacher(path, model, meta)
    log(f"teacher: test accuracy {metrics['test_accuracy']:.4f} in {metrics['train_seconds']:.1f}s -> {path}")
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, meta, path


def is_teacher_path(spec: str) -> bool:
    """A file spec (existing, or spelled like a path), as opposed to a registry name."""
    return Path(spec).expanduser().is_file() or any(sep in spec for sep in ("/", "\\")) or spec.endswith((".pt", ".ts", ".pth"))


def resolve_teacher(
    spec: str,
    dataset: str,
    schedule: Schedule,
    *,
    preset: str,
    seed: int = 0,
    device: torch.device,
    data_dir=None,
    reconstruction: bool = False,
    log=print,
) -> tuple[nn.Module, dict, Path]:
    """``spec`` is ``default`` (the teacher shipped for the dataset, `nas_kd.models.shipped`, or
    resnet20 trained here when none ships), a file (cached checkpoint or TorchScript) or a registry
    name, which means the cached teacher of that architecture for the dataset (trained first if
    missing)."""
    from nas_kd.data import dataset_info
    from nas_kd.models.shipped import DEFAULT_SPEC, FALLBACK_ARCH, shipped_teacher, verified_path

    if spec == DEFAULT_SPEC:
        entry = shipped_teacher(dataset_info(dataset, data_dir).name)
        if entry is None:
            log(f"teacher: no teacher ships for {dataset}; using {FALLBACK_ARCH} trained on this machine")
            spec = FALLBACK_ARCH
        else:
            path = verified_path(entry)
            model, meta = load_teacher(path, dataset_info(dataset, data_dir), device)
            log(f"teacher: the shipped {entry.arch} for {entry.dataset} (test accuracy {entry.test_accuracy:.4f}, sha256 {entry.sha256[:12]}; made by '{entry.command}')")
            return model, meta, path
    if is_teacher_path(spec):
        path = Path(spec).expanduser()
        model, meta = load_teacher(path, dataset_info(dataset, data_dir), device)
        return model, meta, path
    return ensure_teacher(dataset, spec, schedule, preset=preset, seed=seed, device=device, data_dir=data_dir, reconstruction=reconstruction, log=log)
