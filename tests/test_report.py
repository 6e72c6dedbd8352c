"""Report files from a hand-made study: states, winner choice, partial reports, the plot."""

import csv
import dataclasses
import json
from pathlib import Path

import optuna
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState, create_trial

from nas_kd.finalize import pick_winner, summarise
from nas_kd.plan import PLAN_ATTR, SearchOptions, TeacherRef, build_plan
from nas_kd.report import trial_rows, write_report
from nas_kd.verdict import compare_runs

SPACE = str(Path(__file__).resolve().parents[1] / "search_spaces" / "mbv2.yaml")


def hand_plan():
    """A real plan for synthetic data, bound to a made-up teacher (the report only reads it)."""
    plan = build_plan(SearchOptions(budget="1M", space=SPACE, dataset="synthetic", mode="full", study="hand", preset="quick", baselines=False, trials=5))
    return dataclasses.replace(plan, teacher=TeacherRef(spec="resnet8", path="t.pt", sha256="ab" * 32, arch="resnet8", test_accuracy=0.9))


CFG = '{"block": "inverted_residual", "stem_width": 8, "stem_kernel": 3, "stem_stride": 1, "stages": [{"depth": 1, "width": 8, "stride": 2, "kernel": 3, "expand": 1, "se": false}]}'
DIST = {"stem.width": CategoricalDistribution([8, 16])}


def add(study, state, value, macs, extra=None):
    attrs = {"macs": macs, "params": 1000, "config": CFG, "describe": "ir c8", "feasible": macs <= 1_000_000, **(extra or {})}
    study.add_trial(create_trial(
        state=state, value=value if state == TrialState.COMPLETE else None, params={"stem.width": 8}, distributions=DIST,
        user_attrs=attrs, system_attrs={"constraints:macs": macs / 1_000_000 - 1},
        intermediate_values={1: value} if state == TrialState.PRUNED else None,
    ))


def make_study(in_tmp):
    study = optuna.create_study(study_name="hand", storage=f"sqlite:///{in_tmp / 'hand.db'}", direction="maximize")
    study.set_user_attr(PLAN_ATTR, hand_plan().to_dict())
    add(study, TrialState.COMPLETE, 0.60, 500_000, {"step_graph": "captured"})
    add(study, TrialState.COMPLETE, 0.0, 3_000_000)  # over budget, rejected untrained
    add(study, TrialState.COMPLETE, 0.75, 900_000)  # the winner
    add(study, TrialState.COMPLETE, 0.75, 950_000)  # ties lose on MACs
    add(study, TrialState.PRUNED, 0.40, 700_000)
    add(study, TrialState.FAIL, None, 800_000, {"fail_reason": "NonFiniteLossError: loss became nan"})
    return study


def test_states_and_winner(in_tmp):
    study = make_study(in_tmp)
    rows = trial_rows(study)
    assert [r["state"] for r in rows] == ["COMPLETE", "INFEASIBLE", "COMPLETE", "COMPLETE", "PRUNED", "FAIL"]
    assert rows[4]["val_accuracy"] == 0.40 and rows[1]["val_accuracy"] is None
    assert pick_winner(study).number == 2


def test_partial_report_without_final_retrain(in_tmp):
    study = make_study(in_tmp)
    paths = write_report(study, partial=True)
    report = json.loads(paths["report.json"].read_text())
    assert report["partial"] and report["baselines"] is None and "test_mean" not in report["winner"]
    assert report["trials_by_state"] == {"COMPLETE": 3, "INFEASIBLE": 1, "PRUNED": 1, "FAIL": 1}
    assert report["winner"]["trial"] == 2 and report["winner"]["thop_macs"] > 0
    with open(paths["trials.csv"]) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 and rows[5]["fail_reason"].startswith("NonFiniteLossError")
    assert rows[0]["step_graph"] == "captured" and rows[2]["step_graph"] == ""  # how --gpu-step graph=1 went (empty without it)
    assert report["trial_counts"] == {"trained": 3, "pruned": 1, "rejected": 1, "failed": 1, "abandoned": 0, "running": 0, "finished": 5}
    assert report["cut_short"] is None and report["verdict"] is None
    md = paths["report.md"].read_text()
    assert "partial" in md and "MACs <= 1.00M" in md and "resnet8" in md and "nas-kd search --budget 1M" in md
    assert "5 finished of 5 requested: 3 trained, 1 pruned, 1 failed; 1 rejected over budget (never trained)" in md
    png = paths["pareto.png"].read_bytes()
    assert png[:4] == b"\x89PNG" and len(png) > 10_000


def test_without_a_final_json_a_full_report_falls_back_to_partial(in_tmp):
    paths = write_report(make_study(in_tmp))
    assert json.loads(paths["report.json"].read_text())["partial"]


def _final(winner_cfg: dict, baseline_cfg: dict) -> dict:
    def runs(accs):
        return summarise([{"seed": s, "test_accuracy": a, "val_accuracy": a} for s, a in zip((1, 2, 3), accs, strict=True)])

    winner = {"trial": 2, "config": winner_cfg, "describe": "ir c8", "search_val_accuracy": 0.75, "macs": 900_000, "params": 1000, "footprint": None, "mode": "full", **runs([0.87, 0.88, 0.8771])}
    modes = {"full": runs([0.87, 0.88, 0.8771] if winner_cfg == baseline_cfg else [0.86, 0.87, 0.87]), "ce": runs([0.86, 0.87, 0.87])}
    baselines = {"config": baseline_cfg, "describe": "ir c8", "macs": 900_000, "params": 1000, "footprint": None, "modes": modes}
    comparisons = {m: d.to_dict() for m, d in compare_runs(winner, modes).items()}
    return {"winner": winner, "baselines": baselines, "comparisons": comparisons, "schedule": {}, "rescreen": None}


def test_when_the_search_chose_the_baseline_its_own_mode_row_says_so(in_tmp):
    study = make_study(in_tmp)
    cfg = json.loads(CFG)
    md = write_report(study, final=_final(cfg, cfg))["report.md"].read_text()
    assert "| baseline in mode full | 3 | +0.00 | +0.00 to +0.00 | the same student (the search chose the baseline) |" in md
    assert "| baseline in mode ce | 3 | +0.90 |" in md and "| better |" in md
    assert "Over 3 paired seeds it is better than the same student in mode ce" in md
    other = write_report(study, final=_final(cfg, {**cfg, "stem_width": 16}))["report.md"].read_text()
    assert "the search chose the baseline" not in other and "is the uniform baseline itself" not in other and "| baseline in mode full | 3 | +0.90 | +0.49 to +1.32 | better |" in other


def test_baselines_passed_over_for_latency_are_named_in_the_report(in_tmp):
    study = make_study(in_tmp)
    cfg = json.loads(CFG)
    final = _final(cfg, {**cfg, "stem_width": 16})
    assert "passed over" not in write_report(study, final=final)["report.md"].read_text()
    final["baselines"]["passed_over"] = [{"describe": "ir c16 big", "latency_ms": 0.2861, "trial": 0}, {"describe": "ir c16 mid", "latency_ms": 0.2104, "trial": None}]
    md = write_report(study, final=final)["report.md"].read_text()
    assert "Larger uniform members measured over the latency limit at the slowest speed seen, passed over as a winner would be: `ir c16 big` (0.286 ms, in trial 0), `ir c16 mid` (0.210 ms, before the retrain)." in md


def test_a_cut_short_search_says_so_in_the_verdict_and_the_report(in_tmp):
    """Fewer finished trials than requested (Ctrl-C here): the markdown and the verdict both say
    why, so a winner of a shorter search is not read as the full search's."""
    from nas_kd.study import INTERRUPTED, STOP_ATTR

    study = make_study(in_tmp)
    plan = dataclasses.replace(hand_plan(), trials=8)
    study.set_user_attr(PLAN_ATTR, plan.to_dict())
    study.set_user_attr(STOP_ATTR, INTERRUPTED)
    cfg = json.loads(CFG)
    paths = write_report(study, final=_final(cfg, {**cfg, "stem_width": 16}))
    report = json.loads(paths["report.json"].read_text())
    assert report["cut_short"] == f"5 of 8 requested candidates finished; {INTERRUPTED}"
    assert report["verdict"].startswith(f"Search cut short ({report['cut_short']}): ")
    assert f"**The search was cut short**: {report['cut_short']}." in paths["report.md"].read_text()


def test_each_seeds_accuracy_is_in_its_own_column(in_tmp):
    study = make_study(in_tmp)
    cfg = json.loads(CFG)
    final = _final(cfg, {**cfg, "stem_width": 16})
    final["baselines"]["modes"]["ce"] = summarise([{"seed": s, "test_accuracy": a, "val_accuracy": a} for s, a in ((3, 0.83), (1, 0.81), (2, 0.82))])  # in another order
    md = write_report(study, final=final)["report.md"].read_text()
    assert "| seed 1 | seed 2 | seed 3 |" in md
    assert "| full | 87.00 | 88.00 | 87.71 |" in md and "| ce | 81.00 | 82.00 | 83.00 |" in md


def test_a_pruned_trial_shows_its_last_epoch_and_trial_seconds_add_up(in_tmp):
    import datetime as dt

    from optuna.trial import FrozenTrial

    study = optuna.create_study(study_name="hand", storage=f"sqlite:///{in_tmp / 'hand.db'}", direction="maximize")
    study.set_user_attr(PLAN_ATTR, hand_plan().to_dict())
    start = dt.datetime(2026, 12, 6, 12, 0, 0)
    for number, (state, seconds) in enumerate(((TrialState.COMPLETE, 30.0), (TrialState.PRUNED, 12.5))):
        study.add_trial(FrozenTrial(
            number=number, trial_id=number, state=state, value=0.6 if state == TrialState.COMPLETE else None, values=None,
            datetime_start=start, datetime_complete=start + dt.timedelta(seconds=seconds), params={"stem.width": 8}, distributions=DIST,
            user_attrs={"macs": 500_000, "params": 1000, "config": CFG, "describe": "ir c8", "feasible": True}, system_attrs={"constraints:macs": -0.5},
            intermediate_values={1: 0.30, 2: 0.45} if state == TrialState.PRUNED else {},
        ))
    report = json.loads(write_report(study, partial=True)["report.json"].read_text())
    assert report["trials"][1]["val_accuracy"] == 0.45  # the epoch it was stopped at, not its first
    assert report["trial_seconds"] == 42.5


def test_every_limit_of_the_budget_gets_its_own_pareto_plot(in_tmp):
    study = make_study(in_tmp)
    plan = build_plan(SearchOptions(budget="macs:1M,params:50k", space=SPACE, dataset="synthetic", mode="full", study="hand", preset="quick", baselines=False, trials=5))
    study.set_user_attr(PLAN_ATTR, dataclasses.replace(plan, teacher=hand_plan().teacher).to_dict())
    paths = write_report(study, partial=True)
    assert paths["pareto.png"].read_bytes()[:4] == paths["pareto-params.png"].read_bytes()[:4] == b"\x89PNG"
    assert "pareto-params.png" in {p.name for p in in_tmp.joinpath("runs", "hand").iterdir()}
