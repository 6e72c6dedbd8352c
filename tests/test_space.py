"""SearchSpace: YAML validation, size, Optuna sampling, extremes, uniform baselines."""

from __future__ import annotations

import math
import random

import optuna
import pytest

from nas_kd.config import parse_budget
from nas_kd.cost import analytic_cost, measure
from nas_kd.errors import UserError
from nas_kd.space import SearchSpace

MBV2, RESNET = "search_spaces/mbv2.yaml", "search_spaces/resnet.yaml"
FMNIST, CIFAR = (1, 28, 28), (3, 32, 32)



GOOD = """\
name: tiny
block: inverted_residual
stem: {width: [8, 16], kernel: 3, stride: 1}
stages:
  - {stride: 1, depth: [1, 2], width: [8, 16], kernel: [3, 5], expand: [1, 6], se: [false, true]}
  - {stride: 2, depth: [1], width: [24]}
"""


def load_text(tmp_path, text: str) -> SearchSpace:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return SearchSpace.load(path)


def test_good_file_loads_with_defaults(tmp_path):
    space = load_text(tmp_path, GOOD)
    assert space.name == "tiny" and space.block == "inverted_residual"
    assert (
        space.stages[1].kernel == (3,) and space.stages[1].expand == (1,) and space.stages[1].se == (False,)
    )
    assert space.size() == 2 * (2 * 2 * 2 * 2 * 2) * 1


@pytest.mark.parametrize(
    "old, new, key, problem",
    [
        ("name: tiny", "name: tiny\nwidth: 3", "width", "unknown key"),
        ("depth: [1, 2], width: [8, 16]", "depth: [1, 2], widht: [8, 16]", "stage1.widht", "unknown key"),
        ("width: [24]", "width: []", "stage2.width", "choice list is empty"),
        ("width: [24]", "width: [0]", "stage2.width", "width must be positive, got 0"),
        ("width: [24]", "width: [-8]", "stage2.width", "width must be positive, got -8"),
        ("{stride: 2, depth", "{stride: 3, depth", "stage2.stride", "stride must be 1 or 2, got 3"),
        ("kernel: [3, 5]", "kernel: [3, 4]", "stage1.kernel", "kernel must be odd, got 4"),
        ("depth: [1]", "depth: [one]", "stage2.depth", "depth must be an integer, got 'one'"),
        ("depth: [1, 2]", "depth: [1, 1]", "stage1.depth", "choices repeat"),
        ("se: [false, true]", "se: [0, 1]", "stage1.se", "se choices must be true or false"),
        ("block: inverted_residual", "block: dense", "block", "unknown block type 'dense'"),
        ("block: inverted_residual", "block: basic", "stage1.expand", "does not apply to block type 'basic'"),
        ("stride: 1}", "stride: 4}", "stem.stride", "stride must be 1 or 2, got 4"),
        ("{width: [8, 16], kernel: 3", "{kernel: 3", "stem.width", "missing"),
        ("{stride: 2, depth: [1], width: [24]}", "{depth: [1], width: [24]}", "stage2.stride", "missing"),
        ("{stride: 2, depth: [1], width: [24]}", "[2, 1, 24]", "stage2", "must be a mapping, got list"),
    ],
)
def test_validation_names_file_key_and_problem(tmp_path, old, new, key, problem):
    assert old in GOOD
    with pytest.raises(UserError) as e:
        load_text(tmp_path, GOOD.replace(old, new, 1))
    message = str(e.value)
    assert message.startswith(f"search space {tmp_path / 'space.yaml'}: {key}: ")
    assert problem in message
    assert "\n" not in message


def test_validation_of_whole_document(tmp_path):
    with pytest.raises(UserError, match=r"space.yaml: stages: must be a non-empty list of stages, got list"):
        load_text(tmp_path, "block: basic\nstem: {width: 8}\nstages: []\n")
    with pytest.raises(UserError, match=r"space.yaml: stages: missing"):
        load_text(tmp_path, "block: basic\nstem: {width: 8}\n")
    with pytest.raises(UserError, match=r"space.yaml: \(top level\): must be a mapping, got nothing"):
        load_text(tmp_path, "")
    with pytest.raises(UserError, match=r"space.yaml: line 3: not valid YAML \(expected ',' or ']'"):
        load_text(tmp_path, "block: basic\nstem: {width: [8\n")
    with pytest.raises(UserError, match=r"cannot read search space .*missing.yaml"):
        SearchSpace.load(tmp_path / "missing.yaml")


def test_sizes_of_shipped_spaces():
    # Per stage: depth x width x kernel x expand x se choices; the stem offers 2 widths.
    assert SearchSpace.load(MBV2).size() == 2 * 2 * (3 * 4 * 2 * 3 * 2) ** 3 * (2 * 4 * 2 * 3 * 2)
    assert SearchSpace.load(RESNET).size() == 2 * (3 * 3 * 2 * 2) * (3 * 4 * 1 * 2) ** 2
    space = SearchSpace.load(MBV2)
    assert space.size() == math.prod(len(c) for _, c in space.decisions())


@pytest.mark.parametrize("path", [MBV2, RESNET])
def test_optuna_sampling_names_and_rebuild(path):
    space = SearchSpace.load(path)
    multi = {name for name, choices in space.decisions() if len(choices) > 1}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    for _ in range(10):
        trial = study.ask()
        cfg = space.sample(trial)
        assert set(trial.params) == multi
        assert space.config_from_params(trial.params) == cfg
    assert {"stem.width", "stage2.depth", "stage2.width", "stage3.se"} <= multi
    if space.block == "inverted_residual":
        assert {"stage2.kernel", "stage2.expand"} <= multi and "stage1.expand" not in multi  # t=1 only
    else:
        assert "stage1.kernel" in multi and "stage2.kernel" not in multi


def test_config_from_params_rejects_bad_params():
    space = SearchSpace.load(MBV2)
    params = {name: choices[0] for name, choices in space.decisions() if len(choices) > 1}
    with pytest.raises(UserError, match="parameter 'stage9.depth' is not a decision of search space mbv2"):
        space.config_from_params({**params, "stage9.depth": 1})
    with pytest.raises(UserError, match="parameter 'stage2.width' is missing"):
        space.config_from_params({k: v for k, v in params.items() if k != "stage2.width"})
    with pytest.raises(UserError, match=r"parameter 'stage2.width'=20 is not one of \[12, 16, 24, 32\]"):
        space.config_from_params({**params, "stage2.width": 20})
    # Python counts True == 1 and 0 == False: a flag is not a number, nor a number a flag.
    tiny = SearchSpace.from_yaml(GOOD)
    flags = {name: choices[0] for name, choices in tiny.decisions() if len(choices) > 1}
    for name, value in (("stage1.se", 1), ("stage1.depth", True)):
        with pytest.raises(UserError, match=f"parameter '{name}'={value!r} is not one of"):
            tiny.config_from_params({**flags, name: value})


def test_params_of_refuses_a_student_outside_the_space():
    """Fixed decisions (a stage's stride, a one-choice width) are no Optuna parameters; a student
    that differs from the space only there is still not a member."""
    import dataclasses

    space = SearchSpace.from_yaml(GOOD)
    member = space.smallest()
    assert space.config_from_params(space.params_of(member)) == member
    moved = dataclasses.replace(member, stages=(member.stages[0], dataclasses.replace(member.stages[1], width=32)))
    with pytest.raises(UserError, match="is not a member of search space tiny"):
        space.params_of(moved)


@pytest.mark.parametrize("path", [MBV2, RESNET])
def test_smallest_and_largest_bound_random_members(path):
    space = SearchSpace.load(path)
    low, high = analytic_cost(space.smallest(), CIFAR, 10), analytic_cost(space.largest(), CIFAR, 10)
    rng = random.Random(0)
    for _ in range(200):
        cost = analytic_cost(space.random_config(rng), CIFAR, 10)
        assert low.macs <= cost.macs <= high.macs and low.params <= cost.params <= high.params


@pytest.mark.parametrize("path", [MBV2, RESNET])
def test_shipped_spaces_cover_interesting_range(path):
    space = SearchSpace.load(path)
    assert measure(space.smallest(), FMNIST, 10).macs < 1_000_000
    assert measure(space.largest(), CIFAR, 10).macs <= 50_000_000
    assert measure(space.largest(), FMNIST, 10).macs > 20_000_000
    assert SearchSpace.load(MBV2).smallest() != space.largest()


def test_mbv2_reaches_0_2m_macs_on_fashion_mnist():
    assert measure(SearchSpace.load(MBV2).smallest(), FMNIST, 10).macs < 300_000


def test_random_config_is_seeded():
    space = SearchSpace.load(MBV2)
    a = [space.random_config(random.Random(5)) for _ in range(2)]
    assert a[0] == a[1]
    assert len({space.random_config(random.Random(i)) for i in range(20)}) == 20


def test_uniform_rule():
    space = SearchSpace.load(MBV2)
    members = space.uniform_members()
    # 4 width indices x 3 depth indices x 3 expansion indices, all distinct in mbv2.
    assert len(members) == 36 == space.num_uniform() and len(set(members)) == 36
    first, last = members[0], members[-1]
    assert first == space.smallest() and first.stem_width == 8
    assert [s.width for s in first.stages] == [8, 12, 16, 32, 48] and [s.depth for s in first.stages] == [1] * 5
    # Shorter lists clamp to their last choice.
    assert last.stem_width == 16 and [s.depth for s in last.stages] == [1, 3, 3, 3, 2]
    assert [s.expand for s in last.stages] == [1, 6, 6, 6, 6]
    for cfg in members:
        assert all(s.kernel == 3 and not s.se for s in cfg.stages)
        # One expansion ratio for the whole network (stage 1 offers only t=1).
        assert len({s.expand for s in cfg.stages[1:]}) == 1
        # One width index w for every stage (clamped where a stage offers fewer widths).
        lists = [space.stages[i].width for i in range(len(cfg.stages))]
        assert any(
            all(s.width == choices[min(w, len(choices) - 1)] for s, choices in zip(cfg.stages, lists, strict=True))
            for w in range(max(map(len, lists)))
        )
    params = [measure(cfg, FMNIST, 10).params for cfg in members]
    assert params == sorted(params)
    with pytest.raises(UserError, match="uniform scale must be 0..35 for mbv2, got 36"):
        space.uniform(36)


def test_baseline_is_largest_fitting_uniform_member():
    space = SearchSpace.load(MBV2)
    members = space.uniform_members()
    costs = [measure(cfg, FMNIST, 10) for cfg in members]
    for budget in ("500k", "2M", "3M", "10M"):
        limit = parse_budget(budget).macs
        expected = max((c.macs, i) for i, c in enumerate(costs) if c.macs <= limit)[1]
        got = space.baseline(parse_budget(budget), FMNIST, 10)
        assert got == members[expected] and measure(got, FMNIST, 10).macs <= limit
    assert space.baseline(parse_budget("1G"), FMNIST, 10) == max(members, key=lambda c: measure(c, FMNIST, 10).macs)
    tight = space.baseline(parse_budget(f"params:{costs[5].params}"), FMNIST, 10)
    assert measure(tight, FMNIST, 10).params <= costs[5].params


def test_a_baseline_measured_over_its_limit_gives_way_to_the_next_member():
    """`nas_kd.finalize` excludes a uniform member whose latency was measured over the limit: the
    baseline is then the largest of the others that fit, never the excluded one."""
    space = SearchSpace.load(MBV2)
    members = space.uniform_members()
    costs = [measure(cfg, FMNIST, 10) for cfg in members]
    budget = parse_budget("2M")
    first = space.baseline(budget, FMNIST, 10)
    others = [(c.macs, c.params, i) for i, c in enumerate(costs) if c.macs <= budget.macs and members[i] != first]
    assert space.baseline(budget, FMNIST, 10, exclude={first.to_json()}) == members[max(others)[2]] != first


def test_baseline_below_smallest_uniform_member_names_its_cost():
    space = SearchSpace.load(RESNET)
    cost = measure(space.uniform(0), CIFAR, 10)
    with pytest.raises(UserError) as e:
        space.baseline(parse_budget("500k"), CIFAR, 10)
    assert "below the smallest uniform member of resnet" in str(e.value)
    assert cost.describe() in str(e.value)


def test_builtin_spaces_are_found_from_any_folder_and_other_paths_are_not_replaced(tmp_path, monkeypatch):
    """`nas-kd search` run outside the checkout (or from a pip install) still finds its default
    space; a path the user typed that does not exist is never silently swapped for a built-in."""
    from nas_kd.errors import UserError
    from nas_kd.space import SearchSpace, builtin_spaces

    monkeypatch.chdir(tmp_path)
    assert {"mbv2", "resnet", "tiny"} <= set(builtin_spaces())
    default, _ = SearchSpace.read("search_spaces/mbv2.yaml")
    assert default.name == SearchSpace.read("mbv2")[0].name == "mbv2"
    assert SearchSpace.read("resnet.yaml")[0].block != default.block
    for typed in ("my_spaces/mbv2.yaml", "search_spaces/nosuch.yaml"):
        with pytest.raises(UserError, match=f"cannot read search space {typed}: No such file or directory \\(built in: mbv2, resnet, tiny"):
            SearchSpace.read(typed)
    (tmp_path / "search_spaces").mkdir()
    (tmp_path / "search_spaces" / "mbv2.yaml").write_text("not: [valid")  # a file of the user's own wins
    with pytest.raises(UserError, match="not valid YAML"):
        SearchSpace.read("search_spaces/mbv2.yaml")
