"""Teacher networks: the registry of architectures and the optional reconstruction head.

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

How teachers are trained, cached and chosen: `nas_kd.models.teacher_training`,
`nas_kd.models.teachers`.
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn

from nas_kd.errors import UserError
from nas_kd.models.staged import ClassifierHead, StagedNet

__all__ = ["build_teacher", "parse_arch", "ReconstructionDecoder", "ScriptedTeacher", "CifarResNet", "WideResNet", "EXAMPLES"]


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


def build_teacher(arch: str, in_channels: int, num_classes: int, reconstruction: tuple[int, int] | None = None, decoder_version: int | None = None) -> nn.Module:
    """A fresh teacher; ``reconstruction=(H, W)`` adds a decoder head (``model.decoder``) of
    ``decoder_version`` (None: the current one; older ones only to load teachers saved with them)."""
    arch = parse_arch(arch)
    if m := _RESNET_RE.match(arch):
        net: nn.Module = CifarResNet(int(m.group(1)), int(m.group(2) or 1), in_channels, num_classes)
    elif m := _WRN_RE.match(arch):
        net = WideResNet(int(m.group(1)), int(m.group(2)), in_channels, num_classes)
    else:
        net = _torchvision_teacher(arch[3:], in_channels, num_classes)
    decoder_version = ReconstructionDecoder.VERSION if decoder_version is None else decoder_version
    decoder = {d.VERSION: d for d in (ReconstructionDecoderV1, ReconstructionDecoderV2, ReconstructionDecoder)}.get(decoder_version)
    if decoder is None:
        raise UserError(f"reconstruction decoder version {decoder_version} is unknown to this nas-kd: upgrade nas-kd or train the teacher again")
    net.decoder = decoder(net.stage_channels[-1], in_channels, reconstruction) if reconstruction else None
    return net


class ReconstructionDecoder(nn.Module):
    """Small decoder from the deepest stage map back to the (normalised) image.

    Zhang et al. train the teacher for classification *and* reconstruction so that its features
    carry generative information too. Their decoder is unpublished; ours (documented in
    docs/DISTILLER.md): two steps of nearest upsampling to half and then the full input size,
    each followed by conv-BN-ReLU (at most `WIDTH` channels, then half that), and a 3x3 conv to
    the image channels. It works from a deepest map of any size and width.

    Why the widths are capped (version 3): the last conv's input is ReLU outputs of positive mean,
    so the reconstruction MSE's curvature along its weights grows with its fan-in (9 x channels),
    and plain SGD diverges once the learning rate passes about 2(1 + momentum) / curvature. With
    version 2's widths (half, then a quarter of the teacher's deepest channels) a wrn-16-4
    teacher's decoder ended in 64 channels, and its training blew up within 10 steps of a short
    warm-up (quick preset, 1 epoch of 4,000 images: the loss went from 3 to 8 to inf as the rate
    passed 0.018), where a resnet20 teacher's (64 -> 32 -> 16) trains at the preset's 0.05. Capped,
    every teacher's decoder is resnet20's from its first conv on, and trains as stably.
    (Version 1 upsampled three times, to twice the input, and convolved there: it made a teacher
    step 2.4x as slow as without it on the CPU.)
    """

    VERSION = 3  # saved in a teacher's meta ("decoder_version"); files without it hold version 1
    WIDTH = 32  # the first conv's channels at most: resnet20's (64 // 2)

    def __init__(self, in_channels: int, out_channels: int, size: tuple[int, int]):
        super().__init__()
        self.size = tuple(size)
        half = max(16, in_channels // 2)
        if self.WIDTH is not None:
            half = min(self.WIDTH, half)
        quarter = max(16, half // 2)
        self.up_half = nn.Sequential(nn.Conv2d(in_channels, half, 3, 1, 1, bias=False), nn.BatchNorm2d(half), nn.ReLU(inplace=True))
        self.up_full = nn.Sequential(nn.Conv2d(half, quarter, 3, 1, 1, bias=False), nn.BatchNorm2d(quarter), nn.ReLU(inplace=True))
        self.out = nn.Conv2d(quarter, out_channels, 3, 1, 1)

    def forward(self, x):
        h, w = self.size
        x = self.up_half(F.interpolate(x, size=((h + 1) // 2, (w + 1) // 2), mode="nearest"))
        return self.out(self.up_full(F.interpolate(x, size=self.size, mode="nearest")))


class ReconstructionDecoderV2(ReconstructionDecoder):
    """Version 2, kept so that teachers saved with it still load: the same decoder with uncapped
    widths (half, then a quarter of the teacher's deepest channels). For a teacher of at most 64
    deepest channels (resnet20, the shipped teacher) it is version 3 exactly."""

    VERSION = 2
    WIDTH = None


class ReconstructionDecoderV1(nn.Module):
    """The first decoder, kept so that reconstruction teachers saved with it still load: three
    upsample-conv-BN-ReLU steps that halve the channels (to twice the input size), a resize to
    the input size, and a 3x3 conv to the image channels."""

    VERSION = 1

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
