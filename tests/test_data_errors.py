"""Every data mistake a user can make: one line naming the problem and the fix, exit code 2."""

import gzip

import numpy as np

from tests.test_data import write_idx


def _rewrite(path, edit):
    """``path``, a gzip file, with its uncompressed bytes passed through ``edit``."""
    path.write_bytes(gzip.compress(edit(gzip.decompress(path.read_bytes()))))


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
    _rewrite(folder / "t10k-labels-idx1-ubyte.gz", lambda raw: raw[:-5])
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


def test_an_idx_file_of_another_type_or_rank_is_refused(cli, in_tmp):
    """Magic bytes 0x0000, type 0x08 (uint8) and the rank each checked: a float idx file, or images
    where labels belong, is refused with one line."""
    folder = write_idx(in_tmp / "data" / "mnist")
    images, labels = folder / "train-images-idx3-ubyte.gz", folder / "train-labels-idx1-ubyte.gz"
    for path, edit in ((images, lambda raw: raw[:2] + b"\x0d" + raw[3:]), (labels, lambda raw: raw[:3] + b"\x03" + raw[4:]), (labels, lambda raw: b"\x01" + raw[1:])):
        write_idx(folder)
        _rewrite(path, edit)
        code, _, err = cli("data", "info", "--dataset", "mnist")
        assert code == 2 and err == f"nas-kd: error: data/mnist/{path.name} is not a uint8 idx file with {3 if path is images else 1} dimensions: fetch the original file again\n"


def test_an_idx_body_longer_than_its_header_is_refused(cli, in_tmp):
    folder = write_idx(in_tmp / "data" / "mnist")
    _rewrite(folder / "t10k-labels-idx1-ubyte.gz", lambda raw: raw + b"\x00\x01")
    code, _, err = cli("data", "info", "--dataset", "mnist")
    assert code == 2 and err == "nas-kd: error: data/mnist/t10k-labels-idx1-ubyte.gz holds 22 bytes of data but its header promises 20: the file is truncated; fetch it again\n"


def test_idx_files_of_the_wrong_size_or_with_labels_past_the_classes_are_refused(cli, in_tmp):
    write_idx(in_tmp / "data" / "mnist", h=27)
    code, _, err = cli("data", "info", "--dataset", "mnist")
    assert code == 2 and err == "nas-kd: error: mnist: train images are (1, 27, 27), expected (1, 28, 28): wrong files in the data folder\n"
    write_idx(in_tmp / "data" / "mnist", label_max=10)
    code, _, err = cli("data", "info", "--dataset", "mnist")
    assert code == 2 and err == "nas-kd: error: mnist: a train label lies outside 0..9: the label file is corrupt; fetch it again\n"


def test_a_cifar_batch_of_the_wrong_width_is_refused(cli, tmp_path):
    import pickle

    from tests.test_data import write_cifar10

    d = write_cifar10(tmp_path)
    with open(d / "data_batch_2", "wb") as f:
        pickle.dump({b"data": np.zeros((20, 3 * 28 * 28), np.uint8), b"labels": [0] * 20}, f, protocol=2)
    code, _, err = cli("data", "info", "--dataset", "cifar10", "--data-dir", tmp_path)
    assert code == 2 and err == f"nas-kd: error: {d / 'data_batch_2'} has data of shape (20, 2352) for 20 labels, expected N×3072: fetch the archive again\n"


def test_npz_with_one_class_tiny_images_or_test_images_of_another_shape_is_refused(cli, tmp_path):
    p = tmp_path / "bad.npz"
    cases = [
        (dict(x=np.zeros((10, 8, 8), np.uint8), y=np.zeros(10, np.int64)), "'y' has a single class; a classifier needs at least 2"),
        (dict(x=np.zeros((10, 4, 4), np.uint8), y=np.arange(10) % 2), "images of 4×4 are too small; nas-kd needs at least 8×8"),
        (dict(x=np.zeros((10, 8, 8), np.uint8), y=np.arange(10) % 2, x_test=np.zeros((2, 9, 9), np.uint8), y_test=np.array([0, 1])), "x_test images are (1, 9, 9) but x images are (1, 8, 8): they must match"),
    ]
    for arrays, why in cases:
        np.savez(p, **arrays)
        code, _, err = cli("data", "info", "--dataset", f"npz:{p}")
        assert code == 2 and err == f"nas-kd: error: {p}: {why}\n"
