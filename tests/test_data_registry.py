"""Dataset names -> `DatasetInfo` and file-name keys, without reading the data (nas_kd.data.registry)."""

import os

import numpy as np
import pytest

from nas_kd.data import canonical_name, dataset_info, dataset_slug
from nas_kd.errors import UserError


@pytest.mark.parametrize(
    "name, classes, shape, flip",
    [
        # Flips keep the label of clothes and objects, not of digits (a flipped 2 is no digit).
        ("fashion-mnist", 10, (1, 28, 28), True),
        ("mnist", 10, (1, 28, 28), False),
        ("cifar10", 10, (3, 32, 32), True),
        ("cifar100", 100, (3, 32, 32), True),
    ],
)
def test_the_standard_datasets_shapes_classes_and_flips(name, classes, shape, flip):
    info = dataset_info(name)
    assert (info.name, info.num_classes, info.input_shape, info.flip) == (name, classes, shape, flip)


def test_a_name_is_read_whatever_its_case_and_surrounding_spaces():
    assert dataset_info("  Fashion-MNIST ") == dataset_info("fashion-mnist")


@pytest.mark.parametrize(
    "spelling, name",
    [("FashionMNIST", "fashion-mnist"), ("fashion_mnist", "fashion-mnist"), ("Fashion MNIST", "fashion-mnist"), ("MNIST", "mnist"), ("CIFAR-10", "cifar10"), ("cifar_100", "cifar100")],
)
def test_common_spellings_of_a_standard_dataset_are_its_one_name(spelling, name):
    # One name: the teacher's file and the study are keyed by it (torchvision spells FashionMNIST, CIFAR10).
    assert canonical_name(spelling) == name and dataset_info(spelling).name == name


def test_other_names_keep_their_spelling_and_near_misses_stay_unknown():
    assert canonical_name(" synthetic:1x16x24 ") == "synthetic:1x16x24"
    assert canonical_name("npz:My_Data.npz") == "npz:My_Data.npz"  # a file's name is case-sensitive
    for name in ("fashion-mnist-2", "cifar1000", "mnist2"):
        with pytest.raises(UserError, match="unknown dataset"):
            dataset_info(name)


@pytest.mark.parametrize(
    "spec, classes, shape",
    [
        ("synthetic", 10, (1, 16, 16)),
        ("synthetic:1x16x24", 10, (1, 16, 24)),  # height before width, K 10 when left out
        ("synthetic:3x8x256:2", 2, (3, 8, 256)),  # the smallest and largest accepted
        ("synthetic:1x256x8:1000", 1000, (1, 256, 8)),
    ],
)
def test_synthetic_specs(spec, classes, shape):
    info = dataset_info(spec)
    # Synthetic classes are prototypes shifted about: a mirror image is not one of them.
    assert (info.name, info.num_classes, info.input_shape, info.flip) == (spec, classes, shape, False)


@pytest.mark.parametrize("spec", ["synthetic:2x16x16", "synthetic:1x7x16", "synthetic:1x16x7", "synthetic:1x257x16", "synthetic:1x16x16:1", "synthetic:1x16x16:1001"])
def test_synthetic_specs_out_of_range_are_refused_with_the_ranges(spec):
    with pytest.raises(UserError, match=f"invalid synthetic spec '{spec}': use synthetic:CxHxW:K with C 1 or 3, H and W 8..256, K 2..1000"):
        dataset_info(spec)


@pytest.mark.parametrize("name", ["synthetic:1x16x16:10x", "synthetic:1x16", "synthetics", "imagenet", ""])
def test_a_name_that_is_not_a_dataset_is_refused_with_the_choices(name):
    with pytest.raises(UserError, match="unknown dataset .*: choose one of fashion-mnist, mnist, cifar10, cifar100, npz:PATH, synthetic"):
        dataset_info(name)


def test_slugs_are_file_name_safe_and_tell_specs_apart():
    slugs = {spec: dataset_slug(spec) for spec in ("fashion-mnist", "synthetic:1x16x16:10", "synthetic:1x16x16:12", "a/b c")}
    assert slugs["fashion-mnist"] == "fashion-mnist"
    assert all(set(slug) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") for slug in slugs.values()), slugs
    assert len(set(slugs.values())) == len(slugs)


def test_an_npz_slug_names_the_file_not_the_spelling_of_its_path(tmp_path, monkeypatch):
    """Runs and caches are keyed by the slug: one file under two spellings is one dataset, and two
    files of the same name in different folders are two."""
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        np.savez(tmp_path / folder / "data.npz", x=np.zeros((14, 8, 8), np.uint8), y=np.arange(14) % 2)
    monkeypatch.chdir(tmp_path / "a")
    relative, absolute = dataset_slug("npz:data.npz"), dataset_slug(f"npz:{tmp_path / 'a' / 'data.npz'}")
    assert relative == absolute and relative.startswith("npz-data-")
    assert dataset_slug(f"npz:{tmp_path / 'b' / 'data.npz'}") != absolute
    assert dataset_slug(f"npz:..{os.sep}b{os.sep}data.npz") == dataset_slug(f"npz:{tmp_path / 'b' / 'data.npz'}")


def test_an_npz_datasets_info_is_read_from_its_arrays(tmp_path):
    path = tmp_path / "rgb.npz"
    np.savez(path, x=np.zeros((14, 12, 10, 3), np.uint8), y=np.arange(14) % 7)
    info = dataset_info(f"npz:{path}")
    assert (info.num_classes, info.input_shape) == (7, (3, 12, 10))
