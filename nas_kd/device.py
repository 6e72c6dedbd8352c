"""Where tensors live and how they are computed: device choice, bf16 autocast, channels_last."""

from __future__ import annotations

import contextlib
import random

import numpy as np
import torch

from nas_kd.errors import UserError

__all__ = ["resolve_device", "autocast", "seed_everything", "memory_format"]


def resolve_device(name: str | None = None) -> torch.device:
    """'auto'/None -> cuda if available else cpu; 'cuda' without a GPU is a UserError."""
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device '{name}': use auto, cpu or cuda[:N]") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device '{name}' was asked for but no CUDA GPU is visible: use --device cpu")
    return device


def autocast(device: torch.device):
    """bf16 autocast on CUDA (no loss scaling needed for bf16); a no-op on the CPU, where bf16
    matmuls are slower than fp32 on most x86 cores."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def memory_format(device: torch.device) -> torch.memory_format:
    """channels_last feeds cuDNN's NHWC tensor-core kernels; on the CPU it buys little."""
    return torch.channels_last if device.type == "cuda" else torch.contiguous_format


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a torch.Generator seeded the same, for data order."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    g = torch.Generator()
    g.manual_seed(seed)
    return g
