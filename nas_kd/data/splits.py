"""Stratified, seeded train/validation split and subsets; `load_splits` returns tensors ready for a loader."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from nas_kd.data.registry import DatasetInfo
from nas_kd.errors import UserError

DEFAULT_VAL_FRACTION = 0.1


@dataclass
class Split:
    x: torch.Tensor  # uint8, N×C×H×W
    y: torch.Tensor  # int64, N

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class Splits:
    info: DatasetInfo
    train: Split
    val: Split
    test: Split
    mean: tuple[float, ...]  # per channel, of the training split, in [0, 1] units
    std: tuple[float, ...]

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


def stratified_split(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (keep, held_out) with ``fraction`` of every class held out (at least one of a
    class with two or more examples), shuffled by ``seed``; both sorted."""
    rng = np.random.default_rng(seed)
    keep, held = [], []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        n_held = int(round(len(idx) * fraction))
        if len(idx) >= 2:
            n_held = min(max(n_held, 1), len(idx) - 1)
        held.append(idx[:n_held])
        keep.append(idx[n_held:])
    return np.sort(np.concatenate(keep)), np.sort(np.concatenate(held))


def stratified_subset(y: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Indices of a class-balanced subset of about ``n`` examples (all of them if n >= len(y))."""
    if n >= len(y):
        return np.arange(len(y))
    _, held = stratified_split(y, n / len(y), seed)
    return held


def load_splits(
    name: str,
    data_dir=None,
    *,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    seed: int = 0,
    train_subset: int | None = None,
) -> Splits:
    """Load a dataset and carve the seeded, stratified validation split from its training set.

    ``train_subset`` keeps a stratified subset of the *remaining* training examples (the quick
    preset's way of fitting a CPU); validation and test are never subsampled, so accuracies stay
    comparable across presets.
    """
    from nas_kd.data.readers import load_arrays  # readers need stratified_split: imported here, no cycle

    if not 0 < val_fraction < 1:
        raise UserError(f"validation fraction must lie strictly between 0 and 1, got {val_fraction}")
    info, (xs, ys, xt, yt) = load_arrays(name, data_dir)
    tr, va = stratified_split(ys, val_fraction, seed)
    if train_subset is not None:
        tr = tr[stratified_subset(ys[tr], train_subset, seed + 1)]
    x_train = torch.from_numpy(xs[tr])
    # Per-channel statistics of the training split, in [0, 1] units.
    flat = x_train.transpose(0, 1).reshape(info.channels, -1).float() / 255
    mean = tuple(float(v) for v in flat.mean(1))
    std = tuple(max(float(v), 1e-3) for v in flat.std(1))
    return Splits(
        info=info,
        train=Split(x_train, torch.from_numpy(ys[tr])),
        val=Split(torch.from_numpy(xs[va]), torch.from_numpy(ys[va])),
        test=Split(torch.from_numpy(xt), torch.from_numpy(yt)),
        mean=mean,
        std=std,
    )
