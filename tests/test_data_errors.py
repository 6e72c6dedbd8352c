"""Every data mistake a user can make: one line naming the problem and the fix, exit code 2."""

import gzip

import numpy as np

from tests.test_data import write_idx


def test_unknown_dataset(cli):
    code, out, err = cli("data", "info", "--dataset", "imagenet")
    assert code == 2
    assert err == "nas-kd: error: unknown dataset 'imagenet': choose one of fashion-mnist, mnist, cifar10, cifar100, npz:PATH, synthetic\n"


def test_missing_files(cli, in_tmp):
    code, _, err = cli("data", "info", "--dataset", "mnist", "--data-dir", in_tmp / "nowhere")
    assert code == 2
    assert err == (
        f"nas-kd: error: no mnist files found (looked in {in_tmp}/nowhere/mnist, {in_tmp}/nowhere, data/mnist, /usr/share/datasets/mnist): "
        "copy the four MNIST idx .gz files into ./data/mnist/ or pass --data-dir\n"
    )


def test_truncated_gz(cli, in_tmp):
    folder = write_idx(in_tmp / "data" / "mnist", truncate="train-images-idx3-ubyte.gz")
    code, _, err = cli("data", "info", "--dataset", "mnist")
    assert code == 2
    assert err.startswith("nas-kd: error: data/mnist/train-images-idx3-ubyte.gz is truncated or corrupt (")
    assert err.endswith("): delete it and fetch the file again\n") and err.count("\n") == 1
    assert folder.is_dir()


def test_idx_body_shorter_than_header(cli, in_tmp):
    folder = write_idx(in_tmp / "data" / "mnist")
    p = folder / "t10k-labels-idx1-ubyte.gz"
    raw = gzip.decompress(p.read_bytes())
    p.write_bytes(gzip.compress(raw[:-5]))
    code, _, err = cli("data", "info", "--dataset", "mnist")
    assert code == 2
    assert err == "nas-kd: error: data/mnist/t10k-labels-idx1-ubyte.gz holds 15 bytes of data but its header promises 20: the file is truncated; fetch it again\n"


def test_npz_mismatched_lengths(cli, tmp_path):
    p = tmp_path / "bad.npz"
    np.savez(p, x=np.zeros((10, 8, 8), np.uint8), y=np.zeros(9, np.int64))
    code, _, err = cli("data", "info", "--dataset", f"npz:{p}")
    assert code == 2
    assert err == f"nas-kd: error: {p}: 'x' has 10 images but 'y' has 9 labels: save one label per image\n"


def test_npz_labels_out_of_range(cli, tmp_path):
    p = tmp_path / "bad.npz"
    np.savez(p, x=np.zeros((10, 8, 8), np.uint8), y=np.arange(10) - 1)
    code, _, err = cli("data", "info", "--dataset", f"npz:{p}")
    assert code == 2
    assert err == f"nas-kd: error: {p}: label -1 in 'y' is out of range: labels must be integers 0..K-1\n"


def test_npz_test_labels_out_of_range(cli, tmp_path):
    p = tmp_path / "bad.npz"
    np.savez(p, x=np.zeros((10, 8, 8), np.uint8), y=np.arange(10) % 3, x_test=np.zeros((2, 8, 8), np.uint8), y_test=np.array([0, 7]))
    code, _, err = cli("data", "info", "--dataset", f"npz:{p}")
    assert code == 2
    assert err == f"nas-kd: error: {p}: label 7 in 'y_test' is out of range: 'y' has classes 0..2\n"


def test_npz_pickled_object_arrays_are_refused(cli, tmp_path):
    p = tmp_path / "obj.npz"
    np.savez(p, x=np.array([object()] * 3, dtype=object), y=np.zeros(3, np.int64))
    code, _, err = cli("data", "info", "--dataset", f"npz:{p}")
    assert code == 2 and "holds object (pickled) arrays, which are refused" in err and err.count("\n") == 1


def test_npz_wrong_dtype_and_missing_file(cli, tmp_path):
    p = tmp_path / "f.npz"
    np.savez(p, x=np.zeros((4, 8, 8), np.float32), y=np.zeros(4, np.int64))
    code, _, err = cli("data", "info", "--dataset", f"npz:{p}")
    assert code == 2 and "has dtype float32, expected uint8" in err
    code, _, err = cli("data", "info", "--dataset", f"npz:{tmp_path / 'nope.npz'}")
    assert code == 2 and err == f"nas-kd: error: npz file '{tmp_path / 'nope.npz'}' does not exist: pass npz:PATH to an .npz with arrays x and y\n"


def test_not_a_gzip_file(cli, in_tmp):
    folder = write_idx(in_tmp / "data" / "mnist")
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(b"this is not gzip")
    code, _, err = cli("data", "info", "--dataset", "mnist")
    assert code == 2 and "train-labels-idx1-ubyte.gz is truncated or corrupt (BadGzipFile)" in err
