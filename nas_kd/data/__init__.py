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

Rooms: `nas_kd.data.registry` (names, `DatasetInfo`), `nas_kd.data.readers` (files -> uint8
arrays), `nas_kd.data.splits` (the stratified validation split, subsets, `load_splits`),
`nas_kd.data.loader` (`DeviceLoader`). Their public names are re-exported here.
"""

from nas_kd.data.loader import Batch, DeviceLoader
from nas_kd.data.readers import load_arrays, require_files
from nas_kd.data.registry import (
    DATASETS,
    SYSTEM_DATA_DIR,
    DatasetInfo,
    canonical_name,
    dataset_info,
    dataset_slug,
)
from nas_kd.data.splits import (
    DEFAULT_VAL_FRACTION,
    Split,
    Splits,
    load_splits,
    stratified_split,
    stratified_subset,
)

__all__ = [
    "DatasetInfo",
    "Split",
    "Splits",
    "DATASETS",
    "canonical_name",
    "dataset_info",
    "dataset_slug",
    "load_arrays",
    "require_files",
    "load_splits",
    "stratified_split",
    "stratified_subset",
    "DeviceLoader",
    "Batch",
    "SYSTEM_DATA_DIR",
    "DEFAULT_VAL_FRACTION",
]
