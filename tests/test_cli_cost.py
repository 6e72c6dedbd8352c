"""`nas-kd cost`: figures for a space on a dataset, one-line errors, never any training."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from nas_kd.cli import main
from nas_kd.config import format_count, parse_budget
from nas_kd.cost import analytic_cost, measure
from nas_kd.space import SearchSpace

ROOT = Path(__file__).resolve().parent.parent
MBV2 = str(ROOT / "search_spaces" / "mbv2.yaml")



def run(capsys, *args):
    code = main(["cost", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def rows(out: str) -> dict[str, str]:
    return {line[:10].strip(): line[10:].strip() for line in out.splitlines()}


def test_budget_2m_on_fashion_mnist(capsys, in_tmp):
    code, out, err = run(capsys, "--space", MBV2, "--dataset", "fashion-mnist", "--budget", "2M")
    assert code == 0 and err == ""
    assert list(in_tmp.iterdir()) == []  # no data fetched, no run directory: nothing trains
    space = SearchSpace.load(MBV2)
    table = rows(out)
    assert table["space"].endswith(f"inverted_residual, 5 stages, {space.size():,} students")
    assert table["input"] == "fashion-mnist: 1x28x28, 10 classes"
    assert table["smallest"].startswith(measure(space.smallest(), (1, 28, 28), 10).describe())
    assert table["largest"].startswith(measure(space.largest(), (1, 28, 28), 10).describe())
    assert table["budget"] == "MACs <= 2.00M"
    baseline = space.baseline(parse_budget("2M"), (1, 28, 28), 10)
    assert table["baseline"].startswith(f"{measure(baseline, (1, 28, 28), 10).describe()}, peak memory ")
    assert table["baseline"].endswith(f" ms  {baseline.describe()}")
    fit, of = table["fit"].split(" random members")[0].split(" of ")
    assert of == "1000" and 0 < int(fit) < 1000 and "does not bind" not in table["fit"]


def test_a_budget_above_the_largest_member_says_it_does_not_bind(capsys):
    code, out, _ = run(capsys, "--space", MBV2, "--dataset", "fashion-mnist", "--budget", "30M", "--samples", "5")
    largest = measure(SearchSpace.load(MBV2).largest(), (1, 28, 28), 10)
    assert code == 0 and rows(out)["fit"] == (
        f"5 of 5 random members (100.0%); the budget MACs <= 30.00M admits the largest member of mbv2 "
        f"({format_count(largest.macs)} MACs, {format_count(largest.params)} params): it does not bind"
    )


def test_deployment_figures_and_budgets(capsys):
    from nas_kd.config import PRECISIONS, format_quantity
    from nas_kd.memory import peak_memory_bytes, size_bytes

    space = SearchSpace.load(MBV2)
    code, out, _ = run(capsys, "--space", MBV2, "--dataset", "fashion-mnist", "--budget", "memory:100k,size:40k", "--precision", "fp32", "--samples", "50")
    table, fp32 = rows(out), PRECISIONS["fp32"]
    small = space.smallest()
    assert code == 0 and table["budget"] == "peak memory <= 100.00kB and size <= 40.00kB (fp32)"
    memory, size = peak_memory_bytes(small, (1, 28, 28), 10, fp32), size_bytes(small, (1, 28, 28), 10, fp32)
    assert f"peak memory {format_quantity('memory', memory)}, size {format_quantity('size', size)} (fp32), latency " in table["smallest"]
    code, _, err = run(capsys, "--space", MBV2, "--dataset", "fashion-mnist", "--budget", "memory:1k")
    assert code == 2 and err.startswith("nas-kd: error: budget peak memory <= 1.00kB (int8) is below the smallest member")
    assert f"{format_quantity('memory', peak_memory_bytes(small, (1, 28, 28), 10, PRECISIONS['int8']))} peak memory): raise" in err


def test_no_budget_lists_uniform_members_only(capsys):
    code, out, _ = run(
        capsys, "--space", str(ROOT / "search_spaces" / "resnet.yaml"), "--dataset", "synthetic"
    )
    table = rows(out)
    assert code == 0 and "baseline" not in table and "fit" not in table
    space = SearchSpace.load(ROOT / "search_spaces" / "resnet.yaml")
    macs = [measure(m, (1, 16, 16), 10).macs for m in space.uniform_members()]
    assert table["uniform"] == (
        f"{len(macs)} members (one width, depth and expansion for all stages), "
        f"{format_count(min(macs))} to {format_count(max(macs))} MACs"
    )
    assert table["input"] == "synthetic: 1x16x16, 10 classes"


def test_budget_below_smallest_member_exits_2_naming_its_cost(capsys):
    code, out, err = run(capsys, "--space", MBV2, "--dataset", "fashion-mnist", "--budget", "1")
    smallest = measure(SearchSpace.load(MBV2).smallest(), (1, 28, 28), 10)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith(
        "nas-kd: error: budget MACs <= 1 is below the smallest member"
    )
    assert smallest.describe() in err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--budget", "banana"], "invalid budget 'banana': 'banana' is not a number"),
        (["--budget", "2M", "--samples", "0"], "--samples must be at least 1, got 0"),
        (["--dataset", "imagenet"], "unknown dataset 'imagenet'"),
    ],
)
def test_bad_input_exits_2_with_one_line(capsys, args, message):
    code, out, err = run(capsys, "--space", MBV2, *args)
    assert code == 2 and out == "" and err.count("\n") == 1 and message in err


def test_bad_space_file_exits_2(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("block: basic\nstem: {width: 8}\nstages: [{stride: 3, depth: 1, width: 8}]\n")
    code, _, err = run(capsys, "--space", str(bad), "--dataset", "synthetic")
    assert (
        code == 2
        and err == f"nas-kd: error: search space {bad}: stage1.stride: stride must be 1 or 2, got 3\n"
    )


def test_subprocess_has_no_traceback():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "nas_kd",
        "cost",
        "--space",
        MBV2,
        "--dataset",
        "fashion-mnist",
        "--budget",
        "banana",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("nas-kd: error: invalid budget 'banana'") and proc.stderr.count("\n") == 1
    assert "Traceback" not in proc.stderr


class SlowingRulerTable:
    """A stand-in latency table: 100 rulers per million MACs. The first table object times its
    ruler at 1 us, every later one at 0.5 us (the machine sped up), and a real measurement's ruler
    (tens of us) is far slower than either: a meter that let its figures' measurements, or a second
    table, into the fit would judge at another speed."""

    made = 0
    threads = 1

    def __init__(self):
        type(self).made += 1
        self.ruler_ms = 0.001 if type(self).made == 1 else 0.0005

    def predict_rulers(self, cfg, shape, classes, space=None):
        from nas_kd.cost import analytic_cost

        return 100 * analytic_cost(cfg, shape, classes).macs / 1e6


def test_latency_fits_are_judged_at_one_speed_the_table_ruler_now(capsys, monkeypatch):
    """latency:0.5ms at 0.001 ms per ruler: members up to 5M MACs fit. The baseline, the printed
    prediction it was judged on and the random members' fit all use that one ruler timing."""
    import random

    import nas_kd.latency

    monkeypatch.setattr(SlowingRulerTable, "made", 0)
    monkeypatch.setattr(nas_kd.latency, "LatencyTable", SlowingRulerTable)
    code, out, err = run(capsys, "--space", MBV2, "--dataset", "fashion-mnist", "--budget", "latency:0.5ms", "--samples", "200", "--seed", "3")
    assert code == 0 and err == "", err
    space, table = SearchSpace.load(MBV2), rows(out)
    fits = lambda cfg: analytic_cost(cfg, (1, 28, 28), 10).macs <= 5e6  # noqa: E731 (100 rulers/M MACs x 0.001 ms <= 0.5 ms)
    expected = max((m for m in space.uniform_members() if fits(m)), key=lambda m: analytic_cost(m, (1, 28, 28), 10).macs)
    assert table["baseline"].endswith(f"  {expected.describe()}")
    predicted = 100 * analytic_cost(expected, (1, 28, 28), 10).macs / 1e6 * 0.001
    assert f"(predicted {predicted:.3f} ms: the fit is judged on the prediction)" in table["baseline"]
    rng = random.Random(3)
    fit = sum(fits(space.random_config(rng)) for _ in range(200))
    assert 0 < fit < 200 and table["fit"].startswith(f"{fit} of 200 random members")
