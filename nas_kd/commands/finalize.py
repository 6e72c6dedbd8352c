"""`nas-kd finalize`: retrain a study's winner and baselines, then rewrite its report and export."""

from __future__ import annotations

import argparse

__all__ = ["register", "run"]


def register(sub) -> None:
    p = sub.add_parser("finalize", help="retrain the winner of a study (and the uniform baseline) and test it")
    p.add_argument("--study", required=True, help="study name (its run folder is runs/<study>/)")
    p.add_argument("--storage", default=None, help="Optuna storage URL (default sqlite:///runs/<study>/study.db)")
    p.add_argument("--retrain-seeds", type=int, default=None, help="how many retrain seeds (default: what the search was run with)")
    p.add_argument("--baselines", action=argparse.BooleanOptionalAction, default=None, help="train the uniform baseline too (default: as the search)")
    p.add_argument("--device", default=None, help="auto, cpu, cuda[:N] (default: as the search)")
    p.add_argument("--jobs", type=int, default=None, help="runs trained at once, one process each (default: as the search's --jobs)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None, help="progress bars (default: only on a terminal)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from nas_kd.errors import UserError
    from nas_kd.search import finish_study

    if args.jobs is not None and args.jobs < 1:
        raise UserError(f"--jobs must be at least 1 (runs trained at once), got {args.jobs}")
    from nas_kd.mps import device_sharing
    from nas_kd.plan import plan_of
    from nas_kd.study import load_study

    plan = plan_of(load_study(args.study, args.storage))
    # The search's mps switch serves its retrain here too; started before CUDA is (nas_kd.mps).
    with device_sharing(plan.step.mps, args.jobs or plan.jobs, args.device or plan.device, _log, "finalize"):
        done = finish_study(args.study, args.storage, retrain_seeds=args.retrain_seeds, baselines=args.baselines, device=args.device, jobs=args.jobs, log=_log, show_progress=args.progress)
    _log(f"verdict: {done['verdict']}")
    return 0


def _log(text: str) -> None:
    print(text, flush=True)
