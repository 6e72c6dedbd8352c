"""Datasets by name -> uint8 tensors -> a loader that lives on the training device.

Names
-----
``fashion-mnist`` (default), ``mnist``
    The standard idx ``.gz`` files (``train-images-idx3-ubyte.gz`` ...), looked up in
    ``--data-dir``, ``./data/<name>/`` and ``/usr/share/datasets/<name>/`` (Debian's
    ``dataset-fashion-mnist`` package installs there).
``cifar10``, ``cifar100``
    The standard python-pickle batch folders (``cifar-10-batches-py/``, ``cifar-100-python/``).
    They are read with a restricted unpickler that can only build dicts, lists, strings, bytes,
    numbers and numpy arrays: a hostile file cannot run code.
``npz:PATH``
    A user's own arrays: ``x`` (uint8, N×H×W or N×H×W×C) and ``y`` (integer labels in
    ``[0, K)``), optionally ``x_test`` and ``y_test``; without them a stratified 1/7 of the data
    is held out as the test set (the same ratio as MNIST's 10k of 70k).
``synthetic`` or ``synthetic:CxHxW:K``
    Small deterministic data with learnable class structure (class prototypes + shifts + noise),
    for tests. Default 1×16×16, 10 classes.

Where torchvision imports and the network answers, missing MNIST/Fashion-MNIST/CIFAR files are
downloaded into ``./data/<name>/`` (or ``--data-dir``).

Splits
------
A seeded, **stratified** validation split is carved from the training set: architecture selection
uses it, and the test set is read only by final evaluation.

Loader
------
`DeviceLoader` keeps the whole split on the device as uint8, shuffles with a device-side
permutation, augments **per batch** on the device (random crop with zero padding; horizontal
flip only where the dataset allows it, never for digits) and normalises there. It is
deterministic for a seed. No per-sample Python work happens in the hot path. `DeviceLoader.batches`
also yields each batch's example indices and flip flags, so that a frozen teacher's outputs can be
computed once per example and view and looked up afterwards (`nas_kd.distill.cache`).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import re
import struct
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nas_kd.errors import UserError

__all__ = [
    "DatasetInfo",
    "Split",
    "Splits",
    "DATASETS",
    "dataset_info",
    "load_arrays",
    "load_splits",
    "stratified_split",
    "stratified_subset",
    "DeviceLoader",
    "Batch",
    "SYSTEM_DATA_DIR",
]

SYSTEM_DATA_DIR = Path("/usr/share/datasets")
DEFAULT_VAL_FRACTION = 0.1


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about a dataset, without loading it."""

    name: str
    num_classes: int
    channels: int
    height: int
    width: int
    flip: bool  # horizontal flips keep the label (clothes, objects) - not for digits

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.height, self.width)


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


# --------------------------------------------------------------------------- the registry

_IDX_FILES = {
    "train_x": "train-images-idx3-ubyte.gz",
    "train_y": "train-labels-idx1-ubyte.gz",
    "test_x": "t10k-images-idx3-ubyte.gz",
    "test_y": "t10k-labels-idx1-ubyte.gz",
}

# name -> (classes, C, H, W, flip, how to get the files)
DATASETS = {
    "fashion-mnist": (10, 1, 28, 28, True, "apt-get install dataset-fashion-mnist, or copy the four idx .gz files"),
    "mnist": (10, 1, 28, 28, False, "copy the four MNIST idx .gz files"),
    "cifar10": (10, 3, 32, 32, True, "unpack cifar-10-python.tar.gz (the 'python version')"),
    "cifar100": (100, 3, 32, 32, True, "unpack cifar-100-python.tar.gz (the 'python version')"),
}
_SYNTH_RE = re.compile(r"^synthetic(?::(\d+)x(\d+)x(\d+)(?::(\d+))?)?$")
_SYNTH_DEFAULT = (1, 16, 16, 10)


def _known_names() -> str:
    return ", ".join([*DATASETS, "npz:PATH", "synthetic"])


def _parse_synthetic(name: str) -> tuple[int, int, int, int] | None:
    m = _SYNTH_RE.match(name)
    if not m:
        return None
    if m.group(1) is None:
        return _SYNTH_DEFAULT
    c, h, w = int(m.group(1)), int(m.group(2)), int(m.group(3))
    k = int(m.group(4)) if m.group(4) else 10
    if not (c in (1, 3) and 8 <= h <= 256 and 8 <= w <= 256 and 2 <= k <= 1000):
        raise UserError(f"invalid synthetic spec '{name}': use synthetic:CxHxW:K with C 1 or 3, H and W 8..256, K 2..1000")
    return c, h, w, k


def dataset_info(name: str, data_dir: str | os.PathLike | None = None) -> DatasetInfo:
    """Classes and input shape of a dataset by name; reads at most an npz file's arrays."""
    name = (name or "").strip()
    if name.lower() in DATASETS:
        k, c, h, w, flip, _ = DATASETS[name.lower()]
        return DatasetInfo(name.lower(), k, c, h, w, flip)
    synth = _parse_synthetic(name)
    if synth:
        c, h, w, k = synth
        return DatasetInfo(name, k, c, h, w, flip=False)
    if name.startswith("npz:"):
        return _load_npz(name[4:])[0]
    raise UserError(f"unknown dataset '{name}': choose one of {_known_names()}")


def dataset_slug(name: str) -> str:
    """A file-name-safe key for a dataset name (npz paths get a short hash of the resolved path)."""
    if name.startswith("npz:"):
        p = Path(name[4:]).expanduser().resolve()
        return f"npz-{re.sub(r'[^A-Za-z0-9_-]+', '_', p.stem)}-{hashlib.sha1(str(p).encode()).hexdigest()[:6]}"
    return re.sub(r"[^A-Za-z0-9_-]+", "_", name)


# --------------------------------------------------------------------------- file readers


def _search_dirs(name: str, data_dir) -> list[Path]:
    dirs = []
    if data_dir:
        dirs += [Path(data_dir) / name, Path(data_dir)]
    dirs += [Path("data") / name, SYSTEM_DATA_DIR / name]
    return dirs


def _gunzip(path: Path) -> bytes:
    try:
        with gzip.open(path, "rb") as f:
            return f.read()
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise UserError(f"{path} is truncated or corrupt ({e.__class__.__name__}): delete it and fetch the file again") from None


def _read_idx(path: Path, expect_ndim: int) -> np.ndarray:
    """Read one idx file (big-endian header: 0x0000, dtype 0x08=uint8, ndim, dims...)."""
    raw = _gunzip(path)
    if len(raw) < 4 or raw[0:2] != b"\x00\x00" or raw[2] != 0x08 or raw[3] != expect_ndim:
        raise UserError(f"{path} is not a uint8 idx file with {expect_ndim} dimensions: fetch the original file again")
    dims = struct.unpack(f">{expect_ndim}I", raw[4 : 4 + 4 * expect_ndim])
    body = raw[4 + 4 * expect_ndim :]
    if len(body) != int(np.prod(dims)):
        raise UserError(f"{path} holds {len(body)} bytes of data but its header promises {int(np.prod(dims))}: the file is truncated; fetch it again")
    return np.frombuffer(body, dtype=np.uint8).reshape(dims).copy()


def _find_idx_dir(name: str, data_dir) -> Path | None:
    for d in _search_dirs(name, data_dir):
        for sub in (d, d / "raw", d / name.replace("-", "").upper() / "raw", d / "FashionMNIST" / "raw", d / "MNIST" / "raw"):
            if all((sub / f).is_file() for f in _IDX_FILES.values()):
                return sub
    return None


def _load_idx_dataset(name: str, data_dir) -> tuple[np.ndarray, ...]:
    folder = _find_idx_dir(name, data_dir) or (_download(name, data_dir) and _find_idx_dir(name, data_dir))
    if not folder:
        _missing(name, data_dir)
    xs = _read_idx(folder / _IDX_FILES["train_x"], 3)
    ys = _read_idx(folder / _IDX_FILES["train_y"], 1)
    xt = _read_idx(folder / _IDX_FILES["test_x"], 3)
    yt = _read_idx(folder / _IDX_FILES["test_y"], 1)
    return xs[:, None], ys, xt[:, None], yt


class _SafeUnpickler(pickle.Unpickler):
    """Builds only plain containers and numpy arrays; any other global is refused, so a hostile
    'CIFAR batch' cannot execute code while it is read."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),
    }

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")


def _read_cifar_batch(path: Path, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            d = _SafeUnpickler(f, encoding="bytes").load()
        data = np.asarray(d[b"data"], dtype=np.uint8)
        labels = np.asarray(d[label_key], dtype=np.int64)
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
        raise UserError(f"{path} is not a readable CIFAR python batch ({e.__class__.__name__}: {e}): fetch the 'python version' archive again") from None
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
        raise UserError(f"{path} has data of shape {data.shape} for {len(labels)} labels, expected N×3072: fetch the archive again")
    return data.reshape(-1, 3, 32, 32), labels


def _load_cifar(name: str, data_dir) -> tuple[np.ndarray, ...]:
    folder_name, train_files, test_file, label_key = {
        "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], "test_batch", b"labels"),
        "cifar100": ("cifar-100-python", ["train"], "test", b"fine_labels"),
    }[name]

    def find():
        for d in _search_dirs(name, data_dir):
            for sub in (d / folder_name, d):
                if all((sub / f).is_file() for f in [*train_files, test_file]):
                    return sub
        return None

    folder = find() or (_download(name, data_dir) and find())
    if not folder:
        _missing(name, data_dir)
    parts = [_read_cifar_batch(folder / f, label_key) for f in train_files]
    xt, yt = _read_cifar_batch(folder / test_file, label_key)
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), xt, yt


def _missing(name: str, data_dir) -> None:
    looked = ", ".join(str(d) for d in _search_dirs(name, data_dir))
    raise UserError(f"no {name} files found (looked in {looked}): {DATASETS[name][5]} into ./data/{name}/ or pass --data-dir")


def _download(name: str, data_dir) -> bool:
    """Fetch through torchvision where it imports and the network answers; False otherwise."""
    if os.environ.get("NAS_KD_NO_DOWNLOAD"):
        return False
    try:
        import torchvision.datasets as tvd  # optional extra 'vision'; raises RuntimeError on CPU-only torch here

        cls = {"fashion-mnist": tvd.FashionMNIST, "mnist": tvd.MNIST, "cifar10": tvd.CIFAR10, "cifar100": tvd.CIFAR100}[name]
        root = Path(data_dir or "data") / name
        root.mkdir(parents=True, exist_ok=True)
        for train in (True, False):
            cls(str(root), train=train, download=True)
        return True
    except Exception:
        return False


def _load_npz(path_text: str):
    path = Path(path_text).expanduser()
    if not path.is_file():
        raise UserError(f"npz file '{path}' does not exist: pass npz:PATH to an .npz with arrays x and y")
    if not zipfile.is_zipfile(path):
        raise UserError(f"{path} is not a readable .npz file (not a zip archive): write it with np.savez(path, x=..., y=...)")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except ValueError as e:
        raise UserError(f"{path} holds object (pickled) arrays, which are refused ({str(e).split('.')[0]}): save plain numeric arrays with np.savez") from None
    except (OSError, zipfile.BadZipFile, EOFError) as e:
        raise UserError(f"{path} is not a readable .npz file ({e.__class__.__name__}): write it with np.savez(path, x=..., y=...)") from None
    for key in ("x", "y"):
        if key not in arrays:
            raise UserError(f"{path} has no array '{key}' (it has {sorted(arrays) or 'none'}): save x (uint8 images) and y (labels)")
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise UserError(f"{path} has only one of x_test and y_test: save both or neither")

    def images(key):
        x = arrays[key]
        if x.dtype != np.uint8:
            raise UserError(f"{path}: '{key}' has dtype {x.dtype}, expected uint8: convert with x.astype(np.uint8) after scaling to 0..255")
        if x.ndim == 3:
            x = x[:, None]
        elif x.ndim == 4 and x.shape[3] in (1, 3, 4):
            x = x.transpose(0, 3, 1, 2)
        else:
            raise UserError(f"{path}: '{key}' has shape {x.shape}, expected N×H×W or N×H×W×C with C in 1, 3, 4")
        if min(x.shape[2:]) < 8:
            raise UserError(f"{path}: images of {x.shape[2]}×{x.shape[3]} are too small; nas-kd needs at least 8×8")
        return np.ascontiguousarray(x)

    def labels(key, n, xkey):
        y = arrays[key]
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise UserError(f"{path}: '{key}' must be a 1-D integer array, got {y.dtype} of shape {y.shape}")
        if len(y) != n:
            raise UserError(f"{path}: '{xkey}' has {n} images but '{key}' has {len(y)} labels: save one label per image")
        return y.astype(np.int64)

    x = images("x")
    y = labels("y", len(x), "x")
    if len(y) < 2:
        raise UserError(f"{path}: {len(y)} examples are too few to split into train, validation and test")
    if y.min() < 0:
        raise UserError(f"{path}: label {int(y.min())} in 'y' is out of range: labels must be integers 0..K-1")
    k = int(y.max()) + 1
    if "x_test" in arrays:
        xt = images("x_test")
        yt = labels("y_test", len(xt), "x_test")
        if xt.shape[1:] != x.shape[1:]:
            raise UserError(f"{path}: x_test images are {xt.shape[1:]} but x images are {x.shape[1:]}: they must match")
        if len(yt) and (yt.min() < 0 or yt.max() >= k):
            bad = int(yt.min()) if yt.min() < 0 else int(yt.max())
            raise UserError(f"{path}: label {bad} in 'y_test' is out of range: 'y' has classes 0..{k - 1}")
    else:
        tr, te = stratified_split(y, 1 / 7, seed=0)
        x, y, xt, yt = x[tr], y[tr], x[te], y[te]
    if k < 2:
        raise UserError(f"{path}: 'y' has a single class; a classifier needs at least 2")
    info = DatasetInfo(f"npz:{path_text}", k, x.shape[1], x.shape[2], x.shape[3], flip=False)
    return info, (x, y, xt, yt)


def _synthetic(c: int, h: int, w: int, k: int, n_train: int = 2400, n_test: int = 600):
    """Each class is a fixed random smooth prototype; samples are shifted, scaled, noisy copies.
    Linear models get part of the way, convnets nearly all: a useful 'does it learn' check."""
    rng = np.random.default_rng(1234)
    coarse = rng.normal(size=(k, c, max(2, h // 4), max(2, w // 4)))
    protos = torch.nn.functional.interpolate(torch.from_numpy(coarse).float(), size=(h, w), mode="bilinear", align_corners=False).numpy()

    def make(n, seed):
        r = np.random.default_rng(seed)
        y = np.arange(n) % k
        r.shuffle(y)
        x = protos[y] * r.uniform(0.7, 1.3, size=(n, 1, 1, 1))
        x = np.stack([np.roll(img, tuple(r.integers(-2, 3, size=2)), axis=(1, 2)) for img in x])
        x = x + r.normal(scale=0.6, size=x.shape)
        return np.clip(128 + 40 * x, 0, 255).astype(np.uint8), y.astype(np.int64)

    xs, ys = make(n_train, 1)
    xt, yt = make(n_test, 2)
    return xs, ys, xt, yt


def load_arrays(name: str, data_dir=None) -> tuple[DatasetInfo, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """(info, (x_train, y_train, x_test, y_test)) as numpy, x uint8 N×C×H×W, y int64."""
    info = None
    key = (name or "").strip()
    if key.lower() in ("fashion-mnist", "mnist"):
        arrays = _load_idx_dataset(key.lower(), data_dir)
    elif key.lower() in ("cifar10", "cifar100"):
        arrays = _load_cifar(key.lower(), data_dir)
    elif key.startswith("npz:"):
        info, arrays = _load_npz(key[4:])
    else:
        info = dataset_info(key)  # synthetic, or a UserError naming the known datasets
        arrays = _synthetic(info.channels, info.height, info.width, info.num_classes)
    info = info or dataset_info(key)
    _validate(info, arrays)
    return info, arrays


def _validate(info: DatasetInfo, arrays) -> None:
    xs, ys, xt, yt = arrays
    for split, x, y in (("train", xs, ys), ("test", xt, yt)):
        if len(x) != len(y):
            raise UserError(f"{info.name}: the {split} split has {len(x)} images but {len(y)} labels: the files do not belong together; fetch them again")
        if x.shape[1:] != info.input_shape:
            raise UserError(f"{info.name}: {split} images are {tuple(x.shape[1:])}, expected {info.input_shape}: wrong files in the data folder")
        if len(y) and (y.min() < 0 or y.max() >= info.num_classes):
            raise UserError(f"{info.name}: a {split} label lies outside 0..{info.num_classes - 1}: the label file is corrupt; fetch it again")


# --------------------------------------------------------------------------- splitting


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


# --------------------------------------------------------------------------- the loader


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
