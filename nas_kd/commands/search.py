"""`nas-kd search`: find the best student within a budget, retrain it, report and export it."""

from __future__ import annotations

import argparse

from nas_kd.commands.common import add_data_args, add_run_args, add_teacher_args

__all__ = ["register", "run"]


def register(sub) -> None:
    p = sub.add_parser("search", help="Optuna search over a space under a budget; then final retrain, report and export")
    p.add_argument("--budget", default="2M", help="cost limits: 2M (MACs, the default), params:200k, memory:64k (peak activation bytes), size:100k (weight bytes), latency:2ms (ms per image, batch 1, this machine), joined by commas, e.g. macs:2M,memory:64k,latency:1.5ms")
    p.add_argument("--precision", default="int8", choices=["int8", "fp32"], help="precision the memory: and size: limits count bytes at (default int8; biases are int32 under int8)")
    p.add_argument("--space", default="search_spaces/mbv2.yaml", help="search space: a YAML file, or a built-in name (mbv2, resnet, tiny; default search_spaces/mbv2.yaml)")
    add_data_args(p)
    add_teacher_args(p)
    p.add_argument("--mode", default=None, help="distiller mode for every candidate and the winner: ce, kd, ktan, ksanc, xu, zhang, full (default: the preset's, kd for both; full is the whole adversarial distiller)")
    p.add_argument("--loss-weights", default=None, help="override the mode's weights and knobs for every candidate and the final retrain, e.g. kd=0.7,adv_feat=0")
    p.add_argument("--trials", type=int, default=None, help="trained candidates the study should hold (default: the preset's; over-budget rejections do not count)")
    p.add_argument("--timeout", type=float, default=None, help="stop starting new trials after this many seconds")
    p.add_argument("--study", default=None, help="study name (default <dataset>_<space>_<budget>, e.g. fashion-mnist_mbv2_macs2M)")
    p.add_argument("--storage", default=None, help="Optuna storage URL (default sqlite:///runs/<study>/study.db)")
    p.add_argument("--sampler", default="tpe", choices=["tpe", "nsga2", "random"], help="tpe (default), nsga2 or random")
    p.add_argument("--objectives", default="accuracy", choices=["accuracy", "accuracy,macs"], help="accuracy (default) or accuracy,macs (Pareto search; no pruning)")
    p.add_argument("--retrain-seeds", type=int, default=3, help="how many seeds the winner and the baseline are retrained with, the same for both: seed+1, seed+2, ... (default 3)")
    p.add_argument("--no-baselines", dest="baselines", action="store_false", help="skip training the uniform baseline (in the search's mode and with ce), and so the verdict")
    p.add_argument("--min-fill", type=float, default=0.85, help="every proposed candidate uses at least this share of the budget's binding limit; proposals are repaired in-process, never trained over budget (default 0.85)")
    p.add_argument("--rescreen", type=int, default=None, help="train the best N distinct candidates and the uniform baseline again on the full schedule (search seed, validation only) and pick the winner among them; 0 or 1: the brief run decides (default: the preset's, 3; at 0.5M the brief run's best alone lost to the re-screened pick, docs/SEARCH.md)")
    p.add_argument("--startup-trials", type=int, default=10, help="TPE draws this many candidates at random (the uniform baseline first) before it models the rest (default 10, Optuna's)")
    p.add_argument("--prune", action=argparse.BooleanOptionalAction, default=None, help="stop a brief run whose best so far is below the median of the finished ones, after an epoch but its last (default: the preset's: off on quick, whose 8 trials count pruned ones, on on standard)")
    p.add_argument("--prune-from-epoch", type=int, default=None, metavar="N", help="the pruner may stop a brief run only after epoch N or later (default: the preset's: 2 on standard, whose first epoch barely ranks candidates; 1 on quick)")
    p.add_argument("--heartbeat", type=int, default=10, help="seconds between a running trial's heartbeats; a trial silent for 3 is taken as dead and retried (default 10)")
    p.add_argument("--teacher-seed", type=int, default=0, help="seed of the cached teacher and of the validation split it left out (default 0)")
    p.add_argument("--jobs", type=int, default=None, help="trial processes on this machine, sharing its device, the teacher file and the study (default: 1 on a CPU, 4 on a GPU)")
    p.add_argument("--brief", default=None, metavar="FIELD=VALUE,...", help="change the preset's brief schedule (each candidate's run), e.g. epochs=2,batch_size=512,lr=0.4,crop=0; fields: epochs, batch_size, lr, momentum, weight_decay, warmup_epochs, label_smoothing, train_subset (0: all), crop (0/1). Nothing is rescaled: a larger batch_size keeps the preset's lr unless lr is given")
    p.add_argument("--full", default=None, metavar="FIELD=VALUE,...", help="change the preset's full schedule (the re-screen and the final retrain), same fields as --brief")
    p.add_argument("--gpu-step", default=None, help="the GPU step's switches, e.g. bf16=0,channels_last=1,benchmark=1,check_every=32,fused=1,graph=1,mps=1 (default: bf16, channels_last, benchmark on, fused, graph and mps off, NaN check every 32 steps on a GPU; see docs/SEARCH.md)")
    p.add_argument("--no-finalize", dest="finalize", action="store_false", help="search only: no final retrain, report partial, no export")
    add_run_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from nas_kd.search import SearchOptions, run_search

    opts = SearchOptions(
        budget=args.budget,
        precision=args.precision,
        space=args.space,
        dataset=args.dataset,
        data_dir=args.data_dir,
        teacher=args.teacher,
        teacher_recon=args.teacher_recon,
        mode=args.mode,
        loss_weights=args.loss_weights,
        trials=args.trials,
        timeout=args.timeout,
        study=args.study,
        storage=args.storage,
        sampler=args.sampler,
        objectives=args.objectives,
        preset=args.preset,
        seed=args.seed,
        retrain_seeds=args.retrain_seeds,
        baselines=args.baselines,
        device=args.device,
        progress=args.progress,
        heartbeat=args.heartbeat,
        min_fill=args.min_fill,
        rescreen=args.rescreen,
        startup_trials=args.startup_trials,
        prune=args.prune,
        prune_from_epoch=args.prune_from_epoch,
        teacher_seed=args.teacher_seed,
        jobs=args.jobs,
        gpu_step=args.gpu_step,
        brief=args.brief,
        full=args.full,
    )
    result = run_search(opts, log=_log, finish=args.finalize)
    if result["report"] is None:
        from nas_kd.report import write_report
        from nas_kd.study import load_study

        paths = write_report(load_study(result["study"], result["storage"]), partial=True)
        _log(f"search: partial report {paths['report.md']} (run 'nas-kd finalize --study {result['study']}' later)")
    if result.get("verdict"):
        _log(f"verdict: {result['verdict']}")  # the last thing a search prints
    return 0


def _log(text: str) -> None:
    print(text, flush=True)
