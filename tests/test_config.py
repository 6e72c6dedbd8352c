"""The budget grammar: accepted forms, and the exact one-line message for each rejected form."""

from __future__ import annotations

import pytest

from nas_kd.config import Budget, format_count, parse_budget, parse_count
from nas_kd.errors import UserError

FORMS = "use '2M' (MACs), 'params:200k', or 'macs:2M,params:200k' (suffixes k, M, G)"


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


def test_budget_fits_violations_and_names():
    both = parse_budget("macs:2M,params:200k")
    assert both.fits(2_000_000, 200_000) and not both.fits(2_000_001, 1) and not both.fits(1, 200_001)
    assert both.violations(3_000_000, 100_000) == [0.5, -0.5]
    assert both.describe() == "MACs <= 2.00M and params <= 200.00k"
    assert both.slug() == "macs2M-params200k"
    assert Budget().fits(10**12, 10**12) and Budget().violations(1, 1) == []
    assert parse_budget("2M") == Budget(macs=2_000_000)  # the original text does not affect equality
