"""Dataset names: what each one is (`DatasetInfo`) without loading it. See `nas_kd.data`."""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from nas_kd.errors import UserError

SYSTEM_DATA_DIR = Path("/usr/share/datasets")


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


# A standard dataset's name with its case, hyphens, underscores and spaces ignored -> its own
# spelling: "Fashion-MNIST", "fashion_mnist", "FashionMNIST" (torchvision's) and "CIFAR-10" all
# name one dataset, and so one teacher file and one study (both are keyed by the name).
def _folded(name: str) -> str:
    return re.sub(r"[-_\s]", "", name.lower())


_SPELLINGS = {_folded(n): n for n in DATASETS}


def canonical_name(name: str) -> str:
    """A standard dataset's own name for any spelling of it (`_SPELLINGS`); any other name
    stripped of surrounding spaces and otherwise as given (synthetic specs, npz paths, unknown
    names, which `dataset_info` refuses)."""
    name = (name or "").strip()
    return _SPELLINGS.get(_folded(name), name)


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
    name = canonical_name(name)
    if name in DATASETS:
        k, c, h, w, flip, _ = DATASETS[name]
        return DatasetInfo(name, k, c, h, w, flip)
    synth = _parse_synthetic(name)
    if synth:
        c, h, w, k = synth
        return DatasetInfo(name, k, c, h, w, flip=False)
    if name.startswith("npz:"):
        from nas_kd.data.readers import _load_npz  # npz names are files: reading one tells its shape

        return _load_npz(name[4:])[0]
    raise UserError(f"unknown dataset '{name}': choose one of {_known_names()}")


def dataset_slug(name: str) -> str:
    """A file-name-safe key for a dataset name (npz paths get a short hash of the resolved path)."""
    if name.startswith("npz:"):
        p = Path(name[4:]).expanduser().resolve()
        return f"npz-{re.sub(r'[^A-Za-z0-9_-]+', '_', p.stem)}-{hashlib.sha1(str(p).encode()).hexdigest()[:6]}"
    return re.sub(r"[^A-Za-z0-9_-]+", "_", name)
