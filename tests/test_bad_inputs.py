"""The bad-input sweep: every mistake gives exit 2, one line naming the problem and the fix, no
traceback, and leaves runs/ exactly as it was (nothing trained, written or half-written)."""

from __future__ import annotations

import gzip
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from nas_kd.models.teachers import build_teacher, save_teacher

MBV2 = str(Path(__file__).resolve().parent.parent / "search_spaces" / "mbv2.yaml")
SYN = ["--dataset", "synthetic"]
FAST = ["--device", "cpu", "--no-progress"]


class Evil:
    """Unpickling this creates a file: the marker must never appear."""

    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def _space(text):
    def make(d: Path):
        (d / "space.yaml").write_text(text)
        return "space.yaml"

    return make


GOOD_STAGE = "{stride: 2, depth: [1], width: [16], kernel: [3], expand: [1]}"


def _npz(**arrays):
    def make(d: Path):
        np.savez(d / "d.npz", **arrays)
        return "npz:d.npz"

    return make


def _truncated_mnist(d: Path):
    folder = d / "data" / "mnist"
    folder.mkdir(parents=True)
    for name, ndim, dims in (
        ("train-images-idx3-ubyte.gz", 3, (20, 28, 28)),
        ("train-labels-idx1-ubyte.gz", 1, (20,)),
        ("t10k-images-idx3-ubyte.gz", 3, (5, 28, 28)),
        ("t10k-labels-idx1-ubyte.gz", 1, (5,)),
    ):
        header = bytes([0, 0, 8, ndim]) + b"".join(n.to_bytes(4, "big") for n in dims)
        data = gzip.compress(header + bytes(int(np.prod(dims))))
        (folder / name).write_bytes(data[: len(data) // 2] if name.startswith("train-images") else data)
    return "mnist"


def _evil_pickle(d: Path):
    with open(d / "evil.pt", "wb") as f:
        pickle.dump({"format": "nas-kd-teacher/1", "state_dict": Evil()}, f)
    return "evil.pt"


def _evil_zip(d: Path):
    torch.save({"format": "nas-kd-teacher/1", "meta": Evil()}, d / "evil.pt")
    return "evil.pt"


def _teacher_for(dataset_classes: int):
    def make(d: Path):
        net = build_teacher("resnet8", 1, dataset_classes)
        meta = {"dataset": "synthetic:1x16x16:5", "num_classes": dataset_classes, "input_shape": [1, 16, 16], "arch": "resnet8", "reconstruction": False}
        save_teacher(d / "t5.pt", net, meta)
        return "t5.pt"

    return make


def _junk(d: Path):
    (d / "junk.pt").write_bytes(b"not a checkpoint at all")
    return "junk.pt"


def _text(name, text):
    def make(d: Path):
        (d / name).write_text(text)
        return name

    return make


# (id, argv with {} standing for what the setup function returns, expected stderr fragment, setup)
CASES = [
    # budgets
    ("budget-word", ["cost", "--space", MBV2, *SYN, "--budget", "banana"], "invalid budget 'banana': 'banana' is not a number", None),
    ("budget-below-smallest", ["cost", "--space", MBV2, *SYN, "--budget", "1"], "is below the smallest member of mbv2", None),
    ("budget-negative", ["cost", "--space", MBV2, *SYN, "--budget=-2M"], "invalid budget '-2M'", None),
    ("budget-twice", ["cost", "--space", MBV2, *SYN, "--budget", "macs:2M,macs:3M"], "'macs' is given twice", None),
    ("budget-unknown-limit", ["cost", "--space", MBV2, *SYN, "--budget", "flops:2M"], "unknown limit 'flops'", None),
    ("budget-empty-part", ["cost", "--space", MBV2, *SYN, "--budget", "2M,"], "a limit between commas is empty", None),
    ("budget-bad-suffix", ["cost", "--space", MBV2, *SYN, "--budget", "2T"], "invalid budget '2T'", None),
    # search-space YAML
    ("space-missing", ["cost", "--space", "nope.yaml", *SYN], "cannot read search space nope.yaml", None),
    ("space-not-yaml", ["cost", "--space", "{}", *SYN], "not valid YAML", _text("space.yaml", "stages: [\n  - {stride: 1")),
    ("space-unknown-key", ["cost", "--space", "{}", *SYN], "colour", _space(f"name: x\nblock: basic\ncolour: red\nstem: {{width: [8]}}\nstages: [{GOOD_STAGE}]\n")),
    ("space-empty-choices", ["cost", "--space", "{}", *SYN], "empty", _space("name: x\nblock: basic\nstem: {width: [8]}\nstages: [{stride: 1, depth: [], width: [8]}]\n")),
    ("space-stride-3", ["cost", "--space", "{}", *SYN], "stride", _space("name: x\nblock: basic\nstem: {width: [8]}\nstages: [{stride: 3, depth: [1], width: [8]}]\n")),
    ("space-width-0", ["cost", "--space", "{}", *SYN], "width", _space("name: x\nblock: basic\nstem: {width: [8]}\nstages: [{stride: 1, depth: [1], width: [0]}]\n")),
    ("space-unknown-block", ["cost", "--space", "{}", *SYN], "block", _space(f"name: x\nblock: transformer\nstem: {{width: [8]}}\nstages: [{GOOD_STAGE}]\n")),
    # datasets and their files
    ("dataset-unknown", ["data", "info", "--dataset", "imagenet"], "unknown dataset 'imagenet': choose one of", None),
    ("dataset-synthetic-spec", ["data", "info", "--dataset", "synthetic:5x16x16"], "invalid synthetic spec", None),
    ("npz-missing", ["data", "info", "--dataset", "npz:nope.npz"], "npz file 'nope.npz' does not exist", None),
    ("npz-lengths", ["data", "info", "--dataset", "{}"], "'x' has 10 images but 'y' has 9 labels", _npz(x=np.zeros((10, 8, 8), np.uint8), y=np.zeros(9, np.int64))),
    ("npz-label-range", ["data", "info", "--dataset", "{}"], "label -3 in 'y' is out of range", _npz(x=np.zeros((10, 8, 8), np.uint8), y=np.arange(10) - 3)),
    ("npz-no-y", ["data", "info", "--dataset", "{}"], "has no array 'y'", _npz(x=np.zeros((10, 8, 8), np.uint8))),
    ("npz-tiny-images", ["data", "info", "--dataset", "{}"], "too small", _npz(x=np.zeros((10, 4, 4), np.uint8), y=np.arange(10) % 2)),
    ("npz-not-zip", ["data", "info", "--dataset", "npz:{}"], "is not a readable .npz file", _text("x.npz", "hello")),
    ("mnist-truncated", ["data", "info", "--dataset", "{}"], "is truncated or corrupt", _truncated_mnist),
    # a missing dataset is refused before a command prints its plan or resolves a teacher
    ("search-data-missing", ["search", "--dataset", "cifar10", "--data-dir", "nowhere", "--space", MBV2, "--budget", "2M", *FAST], "no cifar10 files found (looked in nowhere/cifar10,", None),
    ("distill-data-missing", ["distill", "--dataset", "cifar10", "--data-dir", "nowhere", "--space", MBV2, "--uniform", "0", *FAST], "no cifar10 files found (looked in nowhere/cifar10,", None),
    # teacher files and names
    ("teacher-pickle-code", ["distill", "--space", MBV2, "--uniform", "0", "--teacher", "{}", "--mode", "kd", *SYN, *FAST], "refusing to load", _evil_pickle),
    ("teacher-zip-code", ["distill", "--space", MBV2, "--uniform", "0", "--teacher", "{}", "--mode", "kd", *SYN, *FAST], "refusing to load", _evil_zip),
    ("teacher-wrong-classes", ["distill", "--space", MBV2, "--uniform", "0", "--teacher", "{}", "--mode", "kd", *SYN, *FAST], "was trained on 'synthetic:1x16x16:5' (5 classes", _teacher_for(5)),
    ("teacher-junk", ["distill", "--space", MBV2, "--uniform", "0", "--teacher", "{}", "--mode", "kd", *SYN, *FAST], "refusing to load", _junk),
    ("teacher-missing-file", ["distill", "--space", MBV2, "--uniform", "0", "--teacher", "gone/t.pt", "--mode", "kd", *SYN, *FAST], "teacher file 'gone/t.pt' does not exist", None),
    ("teacher-unknown-arch", ["teacher", *SYN, "--arch", "vgg16"], "unknown teacher 'vgg16'", None),
    ("teacher-bad-depth", ["teacher", *SYN, "--arch", "resnet21"], "invalid teacher 'resnet21'", None),
    # options out of range or in conflict
    ("teacher-epochs-0", ["teacher", *SYN, "--arch", "resnet8", "--epochs", "0"], "epochs must be at least 1", None),
    ("teacher-batch-0", ["teacher", *SYN, "--arch", "resnet8", "--batch-size", "0"], "batch size must be at least 1", None),
    ("preset-unknown", ["teacher", *SYN, "--preset", "turbo"], "invalid choice: 'turbo'", None),
    ("device-cuda-without-gpu", ["teacher", *SYN, "--arch", "resnet8", "--device", "cuda"], "no CUDA GPU is visible", None),
    ("device-unknown", ["teacher", *SYN, "--arch", "resnet8", "--device", "tpu"], "unknown device 'tpu'", None),
    ("mode-unknown", ["distill", "--space", MBV2, "--uniform", "0", "--mode", "magic", *SYN, *FAST], "magic", None),
    ("loss-weights-key", ["distill", "--space", MBV2, "--uniform", "0", "--mode", "kd", "--loss-weights", "banana=1", *SYN, *FAST], "banana", None),
    ("loss-weights-value", ["distill", "--space", MBV2, "--uniform", "0", "--mode", "kd", "--loss-weights", "kd=lots", *SYN, *FAST], "lots", None),
    ("uniform-out-of-range", ["distill", "--space", MBV2, "--uniform", "999", "--mode", "ce", *SYN, *FAST], "uniform scale must be 0..35 for mbv2, got 999", None),
    ("student-config-not-json", ["distill", "--student-config", "{}", "--mode", "ce", *SYN, *FAST], "cfg.json", _text("cfg.json", "{not json")),
    ("student-and-space", ["distill", "--student-config", "a.json", "--space", MBV2, *SYN], "not allowed with argument", None),
    # search: options, storage URLs, mismatched studies
    *[
        (f"search-{name}", ["search", *SYN, "--space", MBV2, "--teacher", "resnet8", "--budget", "200k", *opts, *FAST], fragment, None)
        for name, opts, fragment in [
            ("trials-0", ["--trials", "0"], "--trials must be at least 1, got 0"),
            ("retrain-seeds-0", ["--retrain-seeds", "0"], "--retrain-seeds must be at least 1"),
            ("timeout-negative", ["--timeout=-5"], "--timeout must be positive"),
            ("heartbeat-0", ["--heartbeat", "0"], "--heartbeat must be at least 1 second"),
            ("sampler", ["--sampler", "grid"], "invalid choice: 'grid'"),
            ("objectives", ["--objectives", "speed"], "invalid choice: 'speed'"),
            ("study-name", ["--study", "../escape"], "invalid study name '../escape'"),
            ("storage-scheme", ["--storage", "redis://localhost/0"], "unsupported storage URL scheme 'redis'"),
            ("storage-folder", ["--storage", "sqlite:////no/such/dir/s.db"], "folder '/no/such/dir' does not exist"),
            ("storage-memory", ["--storage", "sqlite:///:memory:"], "is in memory"),
            ("storage-unreachable", ["--storage", "postgresql://nobody@127.0.0.1:1/x"], "check that the database server runs"),
            ("storage-not-url", ["--storage", "runs/study.db"], "invalid storage URL 'runs/study.db'"),
            ("budget", ["--budget", "2 MACs"], "invalid budget '2 MACs'"),
            ("mode", ["--mode", "distill-harder"], "distill-harder"),
            ("jobs-0", ["--jobs", "0"], "--jobs must be at least 1 (trial processes on this machine), got 0"),
            ("gpu-step-key", ["--gpu-step", "fp8=1"], "invalid --gpu-step part 'fp8=1': known switches are bf16, channels_last, benchmark, check_every"),
            ("gpu-step-value", ["--gpu-step", "bf16=yes"], "invalid --gpu-step bf16=yes: switches take 0 or 1"),
            ("gpu-step-every", ["--gpu-step", "check_every=0"], "invalid --gpu-step check_every=0: use a step count of 1 or more"),
        ]
    ],
    ("finalize-unknown-study", ["finalize", "--study", "nope"], "no study 'nope'", None),
    ("export-unknown-study", ["export", "--study", "nope"], "no study 'nope'", None),
    ("dashboard-unknown-study", ["dashboard", "--study", "nope"], "no study 'nope'", None),
    ("unknown-option", ["cost", "--space", MBV2, "--bugdet", "2M"], "unrecognized arguments: --bugdet 2M", None),
    ("unknown-command", ["serach"], "invalid choice: 'serach'", None),
]


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input(case, cli, in_tmp):
    name, argv, fragment, setup = case
    runs = in_tmp / "runs"
    (runs / "teachers").mkdir(parents=True)
    (runs / "keep.txt").write_text("a user's earlier run")
    before = _snapshot(runs)
    value = setup(in_tmp) if setup else None
    args = [a.format(value) if "{}" in a else a for a in argv]
    code, out, err = cli(*args)
    assert code == 2, (name, out, err)
    assert out == "", f"{name} printed before its refusal: {out!r}"  # the refusal is the one line
    assert err.startswith("nas-kd: error: ") and err.endswith("\n") and err.count("\n") == 1, err
    assert fragment in err, err
    assert "Traceback" not in err + out
    assert _snapshot(runs) == before, f"{name} changed runs/"
    assert not (in_tmp / "PWNED").exists()


def test_sweep_is_broad():
    assert len(CASES) >= 30


def test_no_traceback_through_the_real_entry_point(in_tmp):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "nas_kd", "cost", "--space", MBV2, "--dataset", "synthetic", "--budget", "banana"], capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr and r.stderr.count("\n") == 1
