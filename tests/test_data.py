import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from nas_kd.data import (
    SYSTEM_DATA_DIR,
    DeviceLoader,
    Split,
    dataset_info,
    load_arrays,
    load_splits,
    stratified_split,
)
from nas_kd.errors import UserError

FASHION = SYSTEM_DATA_DIR / "fashion-mnist"


def write_idx(folder: Path, n_train=60, n_test=20, h=28, label_max=9, truncate=None):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)

    def images(name, n):
        body = rng.integers(0, 256, size=(n, h, h), dtype=np.uint8).tobytes()
        data = struct.pack(">BBBB", 0, 0, 8, 3) + struct.pack(">III", n, h, h) + body
        with gzip.open(folder / name, "wb") as f:
            f.write(data)

    def labels(name, n):
        y = (np.arange(n) % (label_max + 1)).astype(np.uint8).tobytes()
        with gzip.open(folder / name, "wb") as f:
            f.write(struct.pack(">BBBB", 0, 0, 8, 1) + struct.pack(">I", n) + y)

    images("train-images-idx3-ubyte.gz", n_train)
    labels("train-labels-idx1-ubyte.gz", n_train)
    images("t10k-images-idx3-ubyte.gz", n_test)
    labels("t10k-labels-idx1-ubyte.gz", n_test)
    if truncate:
        p = folder / truncate
        p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])
    return folder


def write_cifar10(folder: Path, per_batch=20):
    d = folder / "cifar-10-batches-py"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8), b"labels": list(np.arange(per_batch) % 10)}
        with open(d / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)
    return d


# ----------------------------------------------------------------------------- real data


@pytest.mark.skipif(not FASHION.is_dir() and not os.environ.get("CI"), reason="dataset-fashion-mnist is not installed")
def test_real_fashion_mnist_sizes_and_shape():
    s = load_splits("fashion-mnist")
    assert s.info.num_classes == 10 and s.info.input_shape == (1, 28, 28)
    assert len(s.train) + len(s.val) == 60000 and len(s.test) == 10000
    assert s.train.x.dtype == torch.uint8
    # Stratified: every class has exactly 600 of the 6000 validation images.
    assert torch.bincount(s.val.y, minlength=10).tolist() == [600] * 10


def test_data_info_cli_real(cli):
    if not FASHION.is_dir():
        pytest.skip("dataset-fashion-mnist is not installed")
    code, out, _ = cli("data", "info", "--dataset", "fashion-mnist")
    assert code == 0
    assert "classes:     10" in out and "input shape: 1x28x28" in out
    assert "train + val = 60000" in out and "test:        10000" in out


# ----------------------------------------------------------------------------- readers


def test_idx_reader_round_trip(tmp_path):
    write_idx(tmp_path / "mnist")
    info, (xs, ys, xt, yt) = load_arrays("mnist", tmp_path)
    assert xs.shape == (60, 1, 28, 28) and xt.shape == (20, 1, 28, 28)
    assert info.flip is False  # digits: no horizontal flips


def test_cifar10_reader_on_small_files(tmp_path):
    write_cifar10(tmp_path)
    info, (xs, ys, xt, yt) = load_arrays("cifar10", tmp_path)
    assert xs.shape == (100, 3, 32, 32) and xt.shape == (20, 3, 32, 32) and info.num_classes == 10


def test_cifar_reader_refuses_code_in_pickle(tmp_path):
    d = write_cifar10(tmp_path)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    with open(d / "test_batch", "wb") as f:
        pickle.dump({b"data": Evil(), b"labels": []}, f)
    with pytest.raises(UserError, match="is not a readable CIFAR python batch"):
        load_arrays("cifar10", tmp_path)
    assert not marker.exists()


def test_synthetic_is_deterministic_and_sized():
    a = load_splits("synthetic:3x8x8:4", seed=3)
    b = load_splits("synthetic:3x8x8:4", seed=3)
    assert torch.equal(a.train.x, b.train.x) and a.info.input_shape == (3, 8, 8) and a.info.num_classes == 4


def test_npz_without_test_arrays_holds_out_a_stratified_test_split(tmp_path):
    p = tmp_path / "d.npz"
    np.savez(p, x=np.zeros((70, 10, 10, 3), np.uint8), y=np.arange(70) % 7)
    s = load_splits(f"npz:{p}")
    assert s.info.input_shape == (3, 10, 10) and s.info.num_classes == 7
    # 1/7 of each class's 10 examples rounds to one test example per class.
    assert torch.bincount(s.test.y, minlength=7).tolist() == [1] * 7
    assert len(s.train) + len(s.val) == 63


def test_train_subset_keeps_val_and_test_whole():
    full = load_splits("synthetic")
    sub = load_splits("synthetic", train_subset=500)
    assert len(sub.train) == 500 and len(sub.val) == len(full.val) and len(sub.test) == len(full.test)


def test_stratified_split_proportions():
    y = np.repeat(np.arange(5), 100)
    keep, held = stratified_split(y, 0.1, seed=0)
    assert len(held) == 50 and np.bincount(y[held]).tolist() == [10] * 5
    assert not set(keep) & set(held)


# ----------------------------------------------------------------------------- loader


def _loader(split, **kw):
    args = dict(batch_size=16, device="cpu", mean=(0.5,), std=(0.25,), train=True, seed=0)
    args.update(kw)
    return DeviceLoader(split, **args)


def test_loader_is_deterministic_for_a_seed_and_differs_across_seeds():
    split = load_splits("synthetic").train
    a = [x for x, _ in _loader(split, flip=True)]
    b = [x for x, _ in _loader(split, flip=True)]
    c = [x for x, _ in _loader(split, flip=True, seed=1)]
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    assert not torch.equal(a[0], c[0])


def test_loader_covers_every_example_once_per_epoch_without_augmentation():
    x = torch.arange(50, dtype=torch.uint8).view(50, 1, 1, 1).expand(50, 1, 8, 8).contiguous()
    split = Split(x, torch.arange(50))
    seen = torch.cat([y for _, y in _loader(split, augment=False, drop_last=False)])
    assert sorted(seen.tolist()) == list(range(50))


def test_training_order_is_shuffled_anew_each_epoch_and_evaluation_is_not():
    """SGD needs a new random order every epoch; a fixed order would train on the same batches
    each epoch and still cover every example once."""
    x = torch.zeros((64, 1, 4, 4), dtype=torch.uint8)
    split = Split(x, torch.arange(64))
    loader = _loader(split, augment=False)
    first, second = (torch.cat([y for _, y in loader]) for _ in range(2))
    assert sorted(first.tolist()) == sorted(second.tolist()) == list(range(64))
    assert not torch.equal(first, torch.arange(64)) and not torch.equal(first, second)
    assert torch.equal(torch.cat([y for _, y in _loader(split, augment=False, train=False)]), torch.arange(64))


def test_a_crop_shifts_each_image_on_both_axes_independently():
    """Each image's window is drawn per axis: one bright pixel lands at positions whose row and
    column offsets differ, not only along the diagonal."""
    x = torch.zeros((256, 1, 9, 9), dtype=torch.uint8)
    x[:, :, 4, 4] = 255
    split = Split(x, torch.zeros(256, dtype=torch.long))
    xb = torch.cat([b for b, _ in _loader(split, pad=2, flip=False, mean=(0.0,), std=(1.0,))])
    rows, cols = (xb[:, 0] == 1).nonzero()[:, 1:].T
    shifts = set(zip((rows - 4).tolist(), (cols - 4).tolist(), strict=True))
    assert len(rows) == len(xb) and {r for r, _ in shifts} == {c for _, c in shifts} == set(range(-2, 3))
    assert any(r != c for r, c in shifts)


def test_loader_normalises_and_crops_with_zero_padding():
    x = torch.full((32, 1, 8, 8), 255, dtype=torch.uint8)
    loader = _loader(Split(x, torch.zeros(32, dtype=torch.long)), mean=(0.0,), std=(1.0,), pad=2)
    xb, _ = next(iter(loader))
    values = set(torch.unique(xb).tolist())
    assert values <= {0.0, 1.0} and 1.0 in values and 0.0 in values  # padding shows as black


def test_flip_only_when_allowed():
    x = torch.zeros((64, 1, 8, 8), dtype=torch.uint8)
    x[:, :, :, 0] = 255  # a bar on the left edge
    split = Split(x, torch.zeros(64, dtype=torch.long))
    no_flip = torch.cat([b for b, _ in _loader(split, pad=0, flip=False, mean=(0.0,), std=(1.0,))])
    flip = torch.cat([b for b, _ in _loader(split, pad=0, flip=True, mean=(0.0,), std=(1.0,))])
    assert (no_flip[:, 0, :, 0] == 1).all()
    assert (flip[:, 0, :, -1] == 1).any() and (flip[:, 0, :, 0] == 1).any()


def test_eval_loader_keeps_order_and_every_example():
    split = load_splits("synthetic").test
    ys = torch.cat([y for _, y in _loader(split, train=False, batch_size=100)])
    assert torch.equal(ys, split.y)


def test_evaluation_reads_the_images_as_stored_even_from_a_loader_built_to_augment():
    """Validation and test accuracy are read on the stored images: an evaluation loader neither
    crops nor flips, whatever its augmentation settings, and its last, partial batch says so for
    each of its examples (the teacher cache looks outputs up by those flags)."""
    x = torch.zeros((40, 1, 8, 8), dtype=torch.uint8)
    x[:, :, :, 0] = 255  # a bar on the left edge: a flip or a shift moves it
    split = Split(x, torch.arange(40))
    loader = _loader(split, train=False, flip=True, pad=2, mean=(0.0,), std=(1.0,))
    batches = list(loader.batches())
    xb = torch.cat([b.x for b in batches])
    assert torch.equal(xb, x.float() / 255) and loader.views == 1
    assert [len(b.flipped) for b in batches] == [len(b.y) for b in batches] == [16, 16, 8] and not torch.cat([b.flipped for b in batches]).any()


def test_the_default_crop_pads_an_eighth_of_the_side():
    """CIFAR's standard 4 pixels at 32 px, 3 at Fashion-MNIST's 28 px (and at least 1)."""
    for side, pad in ((32, 4), (28, 3), (8, 1), (4, 1)):
        assert _loader(Split(torch.zeros((4, 1, side, side), dtype=torch.uint8), torch.zeros(4, dtype=torch.long))).pad == pad


def test_dataset_info_is_cheap_for_known_names():
    assert dataset_info("cifar100").num_classes == 100
    assert dataset_info("mnist").flip is False


def test_idx_files_are_read_as_written(tmp_path):
    """Every array in the order of its file: train and test images and labels (a reader that mixed
    up or reordered the label files would still give the right shapes)."""
    folder = write_idx(tmp_path / "mnist")
    written = {}
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        raw = gzip.decompress((folder / name).read_bytes())
        written[name] = np.frombuffer(raw[16 if "images" in name else 8 :], np.uint8)
    _, (xs, ys, xt, yt) = load_arrays("mnist", tmp_path)
    assert np.array_equal(xs.ravel(), written["train-images-idx3-ubyte.gz"]) and np.array_equal(xt.ravel(), written["t10k-images-idx3-ubyte.gz"])
    assert np.array_equal(ys, written["train-labels-idx1-ubyte.gz"]) and np.array_equal(yt, written["t10k-labels-idx1-ubyte.gz"])


@pytest.mark.parametrize("reduce_to", ["builtins.eval", "builtins.exec", "builtins.getattr", "subprocess.Popen", "os.system"])
def test_cifar_reader_refuses_every_global_but_numpys(tmp_path, reduce_to):
    d = write_cifar10(tmp_path)
    module, name = reduce_to.rsplit(".", 1)
    # protocol 0 spelled out: GLOBAL module name, then a call with one string argument
    evil = f"c{module}\n{name}\n(S'1'\ntR.".encode()
    (d / "test_batch").write_bytes(evil)
    with pytest.raises(UserError, match=f"refusing to load global {module}.{name}"):
        load_arrays("cifar10", tmp_path)


def test_channels_last_npz_images_keep_their_pixels(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, size=(14, 9, 10, 3), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(14) % 2, x_test=x[:2], y_test=np.array([0, 1]))
    _, (xs, _, xt, _) = load_arrays(f"npz:{tmp_path / 'd.npz'}")
    assert xs.shape == (14, 3, 9, 10) and np.array_equal(xs, x.transpose(0, 3, 1, 2)) and np.array_equal(xt, x[:2].transpose(0, 3, 1, 2))


def test_the_split_holds_out_at_least_one_and_keeps_at_least_one_of_every_class():
    y = np.array([0, 0, 1, 1, 1, 2, 2, 2, 2, 2, 3])
    keep, held = stratified_split(y, 0.05, seed=0)
    assert sorted(set(y[held])) == [0, 1, 2] and sorted(set(y[keep])) == [0, 1, 2, 3]  # the class of one stays in training
    keep, held = stratified_split(y, 0.95, seed=0)
    assert sorted(set(y[keep])) == [0, 1, 2]  # every class of two or more keeps one


def test_the_split_is_random_per_seed_and_sorted():
    y = np.repeat(np.arange(4), 50)
    splits = {seed: stratified_split(y, 0.2, seed) for seed in (0, 1)}
    for keep, held in splits.values():
        assert np.all(np.diff(keep) > 0) and np.all(np.diff(held) > 0)
        first = np.concatenate([np.flatnonzero(y == c)[:10] for c in range(4)])
        assert not np.array_equal(held, first)  # not each class's first examples
    assert not np.array_equal(splits[0][1], splits[1][1])
    assert np.array_equal(stratified_split(y, 0.2, 0)[1], splits[0][1])


def test_load_splits_follows_its_seed_and_keeps_a_subset_stratified():
    a, b = load_splits("synthetic", seed=0), load_splits("synthetic", seed=1)
    assert not torch.equal(a.val.y, b.val.y) or not torch.equal(a.val.x, b.val.x)
    sub = load_splits("synthetic", train_subset=200)
    assert torch.bincount(sub.train.y, minlength=10).tolist() == [20] * 10


def test_the_normalisation_is_the_training_splits_own():
    s = load_splits("synthetic:3x8x8:4", train_subset=300)
    pixels = s.train.x.double() / 255
    assert s.mean == pytest.approx(tuple(pixels.mean((0, 2, 3)).tolist()), rel=1e-5)
    assert s.std == pytest.approx(tuple(pixels.transpose(0, 1).reshape(3, -1).std(1).tolist()), rel=1e-4)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1])
def test_a_validation_fraction_outside_zero_to_one_is_refused(fraction):
    with pytest.raises(UserError, match="validation fraction must lie strictly between 0 and 1"):
        load_splits("synthetic", val_fraction=fraction)
