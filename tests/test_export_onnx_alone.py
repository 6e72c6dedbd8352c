"""The exported ONNX graph on its own: raw pixels in, the trained student's predictions out, with
nothing but numpy and onnxruntime (the README's example, run as written)."""

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from nas_kd.data import load_splits, stratified_subset
from nas_kd.export import MIN_AGREEMENT, PARITY_TOLERANCE, export_student
from nas_kd.models.student import build_student
from nas_kd.space import SearchSpace
from nas_kd.train import evaluate, make_loaders

README = Path(__file__).resolve().parent.parent / "README.md"
DATASET = "synthetic:3x16x16:10"  # three channels, so the per-channel normalisation is exercised


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny student trained briefly on synthetic data, exported with parity on validation images;
    its PyTorch logits on the (normalised) test split."""
    torch.manual_seed(0)
    splits = load_splits(DATASET, seed=0)
    space = SearchSpace.from_dict({"block": "inverted_residual", "stem": {"width": 8}, "stages": [{"stride": 2, "depth": 1, "width": 16, "expand": 3}, {"stride": 2, "depth": 1, "width": 24, "expand": 3}]})
    cfg = space.smallest()
    model = build_student(cfg, 3, splits.info.num_classes)
    train, _, test = make_loaders(splits, batch_size=64, device=torch.device("cpu"), seed=0)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(2):
        model.train()
        for x, y in train:
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    accuracy = evaluate(model, test)
    assert accuracy > 0.5, accuracy  # trained: its predictions mean something (chance is 0.1)
    out = tmp_path_factory.mktemp("export")
    arch = {"student": cfg.to_dict(), "in_channels": 3, "input_shape": list(splits.info.input_shape), "num_classes": 10, "dataset": DATASET, "normalisation": {"mean": list(splits.mean), "std": list(splits.std)}}
    pick = torch.from_numpy(stratified_subset(splits.val.y.numpy(), 200, 0))
    record = export_student(model, arch, out, splits.val.x[pick], images_source="validation")
    ((x_test, _),) = list(test)  # the evaluation loader's normalised test split, one batch
    with torch.no_grad():
        logits = model(x_test).numpy()
    return {"dir": out, "record": record, "model": model, "splits": splits, "test_pixels": splits.test.x.numpy(), "torch_logits": logits}


def test_parity_is_measured_on_the_given_validation_images(exported):
    record = exported["record"]
    assert record["images"] == 200 and record["images_source"] == "validation"
    assert all(record["agreement"][k] >= MIN_AGREEMENT and record["max_abs_diff"][k] < PARITY_TOLERANCE for k in ("state_dict", "torchscript", "onnx"))


def test_onnx_on_raw_pixels_equals_pytorch_on_normalised_input(exported):
    """Dropping the in-graph normalisation, or applying it on top of normalised input, would
    move the logits far beyond the tolerance; the last lines show that they would."""
    import onnxruntime

    pixels, expected = exported["test_pixels"], exported["torch_logits"]
    session = onnxruntime.InferenceSession(str(exported["dir"] / "student.onnx"), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"input": pixels})
    assert logits.dtype == np.float32 and logits.shape == expected.shape
    assert np.abs(logits - expected).max() < PARITY_TOLERANCE
    assert (logits.argmax(1) == expected.argmax(1)).mean() >= MIN_AGREEMENT
    mean = torch.tensor(exported["splits"].mean).view(1, -1, 1, 1)
    std = torch.tensor(exported["splits"].std).view(1, -1, 1, 1)
    raw = torch.from_numpy(pixels).float()
    with torch.no_grad():
        for wrong in (raw / 255, raw, ((raw / 255 - mean) / std - mean) / std):
            assert np.abs(exported["model"](wrong).numpy() - expected).max() > 100 * PARITY_TOLERANCE


def readme_example() -> str:
    """The first python block of the README's "Using the exported model" section."""
    section = README.read_text().split("## Using the exported model", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)[0]


def test_readme_example_classifies_with_numpy_and_onnxruntime_alone(exported, tmp_path):
    pixels = exported["test_pixels"]
    np.save(tmp_path / "pixels.npy", pixels)
    check = textwrap.dedent(f"""
        import sys
        classes, names = classify({str(exported["dir"])!r}, np.load("pixels.npy"))
        assert names == [str(k) for k in classes]  # no class names for synthetic data
        np.save("classes.npy", classes)
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "nas_kd"))
        assert not loaded, loaded
        print(len(classes), "classified")
    """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", readme_example() + check], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{len(pixels)} classified"
    classes = np.load(tmp_path / "classes.npy")
    expected = exported["torch_logits"].argmax(1)
    assert len(np.unique(expected)) >= 5  # the predictions vary: agreement is not trivial
    assert (classes == expected).mean() >= MIN_AGREEMENT

