"""The budget grammar: accepted forms, and the exact one-line message for each rejected form."""

from __future__ import annotations

import dataclasses

import pytest

from nas_kd.config import BUDGET_FORMS, Budget, format_count, parse_budget, parse_count
from nas_kd.errors import UserError

FORMS = f"use {BUDGET_FORMS}"


@pytest.mark.parametrize(
    "text, macs, params",
    [
        ("2M", 2_000_000, None),
        ("params:200k", None, 200_000),
        ("macs:2M,params:200k", 2_000_000, 200_000),
        ("params:200k, macs:2M", 2_000_000, 200_000),
        ("1.5G", 1_500_000_000, None),
        ("500", 500, None),
        (" 2m ", 2_000_000, None),
        ("3g", 3_000_000_000, None),
        ("MACS:1k", 1_000, None),
        ("Params : 1.5k", None, 1_500),
        ("2 M", 2_000_000, None),
    ],
)
def test_valid_forms(text, macs, params):
    budget = parse_budget(text)
    assert (budget.macs, budget.params) == (macs, params)
    assert budget.text == text.strip()


@pytest.mark.parametrize(
    "text, why",
    [
        ("", "it is empty"),
        ("banana", "'banana' is not a number with an optional k, M or G suffix"),
        ("2X", "'2X' is not a number with an optional k, M or G suffix"),
        ("-1", "'-1' is not a number with an optional k, M or G suffix"),
        ("1e6", "'1e6' is not a number with an optional k, M or G suffix"),
        ("1.5", "'1.5' is not a number with an optional k, M or G suffix"),
        ("1.2345k", "'1.2345k' is not a number with an optional k, M or G suffix"),
        ("2M params", "'2M params' is not a number with an optional k, M or G suffix"),
        ("macs=2M", "'macs=2M' is not a number with an optional k, M or G suffix"),
        ("params:", "'' is not a number with an optional k, M or G suffix"),
        ("0", "limits must be positive"),
        ("macs:0", "limits must be positive"),
        ("flops:2M", "unknown limit 'flops'"),
        ("latency:2", "'2' is not a number of milliseconds such as 2ms or 1.5ms"),
        ("latency:2s", "'2s' is not a number of milliseconds such as 2ms or 1.5ms"),
        ("latency:0ms", "limits must be positive"),
        ("memory:64kB", "'64kB' is not a number with an optional k, M or G suffix"),
        ("size:-1k", "'-1k' is not a number with an optional k, M or G suffix"),
        ("memory:1k,memory:2k", "'memory' is given twice"),
        ("macs:1M,macs:2M", "'macs' is given twice"),
        ("2M,macs:1M", "'macs' is given twice"),
    ],
)
def test_invalid_forms_have_exact_messages(text, why):
    with pytest.raises(UserError) as e:
        parse_budget(text)
    assert str(e.value) == f"invalid budget '{text}': {why}; {FORMS}"


def test_parse_and_format_count():
    assert parse_count("200k") == 200_000 and parse_count("0.5M") == 500_000
    with pytest.raises(ValueError):
        parse_count("0.5")
    assert [format_count(n) for n in (12, 1234, 2_000_000, 3_500_000_000)] == [
        "12",
        "1.23k",
        "2.00M",
        "3.50G",
    ]
    # a round number takes the larger unit: a budget of 1M prints as 1.00M, not 1000.00k
    assert [format_count(n) for n in (999, 1000, 1_000_000, 1_000_000_000)] == ["999", "1.00k", "1.00M", "1.00G"]


def test_budget_fits_violations_and_names():
    both = parse_budget("macs:2M,params:200k")
    assert both.fits(2_000_000, 200_000) and not both.fits(2_000_001, 1) and not both.fits(1, 200_001)
    assert both.violations(3_000_000, 100_000) == [0.5, -0.5]
    assert both.describe() == "MACs <= 2.00M and params <= 200.00k"
    assert both.slug() == "macs2M-params200k"
    assert Budget().fits(10**12, 10**12) and Budget().violations(1, 1) == []
    assert parse_budget("2M") == Budget(macs=2_000_000)  # the original text does not affect equality


@pytest.mark.parametrize(
    "text, limits",
    [
        ("memory:64k", {"memory": 64_000}),
        ("size:100k", {"size": 100_000}),
        ("latency:2ms", {"latency": 2.0}),
        ("Latency: 1.5 MS", {"latency": 1.5}),
        ("macs:2M,memory:64k,latency:1.5ms", {"macs": 2_000_000, "memory": 64_000, "latency": 1.5}),
        ("memory:32k,size:64k", {"memory": 32_000, "size": 64_000}),
    ],
)
def test_memory_size_and_latency_forms(text, limits):
    budget = parse_budget(text)
    assert budget.limits() == limits and budget.precision == "int8"


def test_new_limits_fit_describe_and_name():
    budget = parse_budget("macs:2M,memory:64k,latency:1.5ms", precision="fp32")
    assert budget.fits(2_000_000, 1, memory=64_000, latency=1.5)
    assert not budget.fits(1, 1, memory=64_001, latency=1.0) and not budget.fits(1, 1, memory=1, latency=1.51)
    assert budget.violations(1_000_000, 5, memory=96_000, latency=3.0) == [-0.5, 0.5, 1.0]
    assert budget.describe() == "MACs <= 2.00M and peak memory <= 64.00kB and latency <= 1.5 ms (fp32)"
    assert budget.slug() == "macs2M-memory64k-latency1.5ms-fp32"
    assert parse_budget("memory:32k,size:64k").slug() == "memory32k-size64k"  # int8 is the default
    assert parse_budget("latency:1ms", precision="fp32").describe() == "latency <= 1 ms"  # precision is moot
    with pytest.raises(ValueError, match="limits memory"):  # a missing value never passes silently
        budget.fits(1, 1, latency=1.0)
    with pytest.raises(UserError, match="unknown precision 'fp16'"):
        parse_budget("2M", precision="fp16")


def test_schedule_changes_parse_and_print_back_exactly():
    from nas_kd.config import get_preset, parse_schedule_overrides, schedule_overrides

    base = get_preset("standard").brief
    changes = parse_schedule_overrides("epochs=1, batch_size=1024,lr=0.123456789,train_subset=0,crop=1,label_smoothing=0.1", "--brief")
    assert changes == {"epochs": 1, "batch_size": 1024, "lr": 0.123456789, "train_subset": None, "crop": True, "label_smoothing": 0.1}
    changed = dataclasses.replace(base, **changes)
    text = schedule_overrides(changed, base)  # train_subset is already all: not a change
    assert text == "epochs=1,batch_size=1024,lr=0.123456789,label_smoothing=0.1,crop=1"
    assert dataclasses.replace(base, **parse_schedule_overrides(text, "--brief")) == changed
    assert parse_schedule_overrides(None, "--brief") == {} and schedule_overrides(base, base) == ""
