"""File readers: idx .gz, CIFAR python batches (restricted unpickler), npz, synthetic data -> uint8 arrays."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np
import torch

from nas_kd.data.registry import (
    _IDX_FILES,
    DATASETS,
    SYSTEM_DATA_DIR,
    DatasetInfo,
    canonical_name,
    dataset_info,
)
from nas_kd.data.splits import stratified_split
from nas_kd.errors import UserError


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
    folder = data_folder(name, data_dir)
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


_CIFAR_FILES = {  # name: (folder in the archive, training batches, test batch, label key)
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], "test_batch", b"labels"),
    "cifar100": ("cifar-100-python", ["train"], "test", b"fine_labels"),
}


def _find_cifar_dir(name: str, data_dir) -> Path | None:
    folder_name, train_files, test_file, _ = _CIFAR_FILES[name]
    for d in _search_dirs(name, data_dir):
        for sub in (d / folder_name, d):
            if all((sub / f).is_file() for f in [*train_files, test_file]):
                return sub
    return None


def data_folder(name: str, data_dir) -> Path:
    """The folder holding a named dataset's files (fashion-mnist, mnist, cifar10, cifar100),
    fetched through torchvision first where it can; a `UserError` naming where it looked and the
    fix otherwise. The loaders read from it; commands reach it first through `require_files`."""
    find = _find_cifar_dir if name in _CIFAR_FILES else _find_idx_dir
    folder = find(name, data_dir) or (_download(name, data_dir) and find(name, data_dir))
    if not folder:
        _missing(name, data_dir)
    return folder


def require_files(name: str, data_dir=None) -> None:
    """`UserError` now where a named dataset's files are missing, so that a command refuses in one
    line before it prints or trains anything; nothing for synthetic data and npz files
    (`dataset_info` has read those)."""
    key = canonical_name(name)
    if key in DATASETS:
        data_folder(key, data_dir)


def _load_cifar(name: str, data_dir) -> tuple[np.ndarray, ...]:
    _, train_files, test_file, label_key = _CIFAR_FILES[name]
    folder = data_folder(name, data_dir)
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
