"""`DeviceLoader`: the whole split on the device as uint8, batch-level augmentation and normalisation there."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from nas_kd.data.splits import Split


@dataclass(frozen=True)
class Batch:
    """One training batch and where it came from."""

    x: torch.Tensor  # normalised float32, N×C×H×W
    y: torch.Tensor  # int64 labels, N
    index: torch.Tensor  # int64 positions of the examples in the split, N
    flipped: torch.Tensor  # bool, N: which examples were horizontally flipped


class DeviceLoader:
    """Batches from a uint8 split that lives on ``device``.

    Training loaders shuffle with a device-side permutation and augment per batch: a random crop
    from the zero-padded image (``pad`` pixels, default H//8) and, where ``flip``, a horizontal
    flip of half the batch. Everything runs as a handful of tensor ops per batch, on the GPU when
    there is one. Batches come out normalised float32 in ``memory_format``.
    """

    def __init__(
        self,
        split: Split,
        *,
        batch_size: int,
        device: torch.device | str,
        mean,
        std,
        train: bool,
        seed: int = 0,
        flip: bool = False,
        pad: int | None = None,
        augment: bool = True,
        drop_last: bool | None = None,
        memory_format: torch.memory_format = torch.contiguous_format,
    ):
        self.device = torch.device(device)
        self.x = split.x.to(self.device, non_blocking=True)
        self.y = split.y.to(self.device, non_blocking=True)
        self.batch_size = int(batch_size)
        self.train = train
        self.augment = augment and train
        self.flip = flip
        h = self.x.shape[2]
        self.pad = max(1, h // 8) if pad is None else pad  # CIFAR's standard 4 px at 32 px, 3 px at 28 px
        self.drop_last = train if drop_last is None else drop_last
        self.memory_format = memory_format
        shape = (1, -1, 1, 1)
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(shape) * 255
        self.inv_std = 1.0 / (torch.tensor(std, dtype=torch.float32, device=self.device).view(shape) * 255)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(seed)

    def __len__(self) -> int:
        n = len(self.y)
        return n // self.batch_size if self.drop_last and n >= self.batch_size else -(-n // self.batch_size)

    @property
    def num_examples(self) -> int:
        return len(self.y)

    @property
    def views(self) -> int | None:
        """How many distinct inputs one example can become: 1 (no augmentation), 2 (identity and
        horizontal flip), or None when random crops make them too many to enumerate."""
        if not self.augment:
            return 1
        if self.pad > 0:
            return None
        return 2 if self.flip else 1

    def __iter__(self):
        for b in self.batches():
            yield b.x, b.y

    def batches(self) -> Iterator[Batch]:
        """Like iterating the loader, but each batch also says which examples it holds and which
        of them were flipped (what `nas_kd.distill.cache.TeacherCache` looks its outputs up by)."""
        n = len(self.y)
        order = torch.randperm(n, device=self.device, generator=self.generator) if self.train else None
        no_flip = torch.zeros(self.batch_size, dtype=torch.bool, device=self.device)
        for i in range(len(self)):
            start, stop = i * self.batch_size, min((i + 1) * self.batch_size, n)
            # Evaluation slices (a view, no copy); training gathers its shuffled indices.
            idx = order[start:stop] if order is not None else torch.arange(start, stop, device=self.device)
            xb, yb = (self.x[idx], self.y[idx]) if order is not None else (self.x[start:stop], self.y[start:stop])
            flipped = no_flip[: stop - start]
            if self.augment:
                xb, flipped = self._augment(xb)
            yield Batch(self.normalise(xb), yb, idx, flipped)

    def normalise(self, xb: torch.Tensor) -> torch.Tensor:
        """uint8 N×C×H×W -> normalised float32 in the loader's memory format."""
        return ((xb.float() - self.mean) * self.inv_std).contiguous(memory_format=self.memory_format)

    def view(self, index: torch.Tensor, flip: bool) -> torch.Tensor:
        """The normalised examples ``index``, horizontally flipped if ``flip``: exactly what
        `batches` yields for them in that view (for loaders without random crops)."""
        xb = self.x[index]
        return self.normalise(xb.flip(3) if flip else xb)

    def _augment(self, xb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(augmented uint8 batch, per-example flip flags)."""
        b, _, h, w = xb.shape
        g = self.generator
        if self.pad > 0:
            # Pad, then one gather picks each image's own (dy, dx) window: no per-sample loop.
            p = self.pad
            xp = torch.nn.functional.pad(xb, (p, p, p, p))
            dy = torch.randint(0, 2 * p + 1, (b, 1), device=self.device, generator=g)
            dx = torch.randint(0, 2 * p + 1, (b, 1), device=self.device, generator=g)
            rows = (torch.arange(h, device=self.device) + dy)[:, None, :, None]
            cols = (torch.arange(w, device=self.device) + dx)[:, None, None, :]
            bi = torch.arange(b, device=self.device)[:, None, None, None]
            ci = torch.arange(xb.shape[1], device=self.device)[None, :, None, None]
            xb = xp[bi, ci, rows, cols]
        mask = torch.zeros(b, dtype=torch.bool, device=self.device)
        if self.flip:
            mask = torch.rand(b, device=self.device, generator=g) < 0.5
            xb = torch.where(mask[:, None, None, None], xb.flip(3), xb)
        return xb, mask
