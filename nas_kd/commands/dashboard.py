"""`nas-kd dashboard`: serve optuna-dashboard on 127.0.0.1 for one study's storage."""

from __future__ import annotations

import argparse

from nas_kd.errors import UserError

__all__ = ["register", "run", "serve"]


def register(sub) -> None:
    p = sub.add_parser("dashboard", help="serve optuna-dashboard for a study on 127.0.0.1")
    p.add_argument("--study", required=True, help="study name")
    p.add_argument("--storage", default=None, help="Optuna storage URL (default sqlite:///runs/<study>/study.db)")
    p.add_argument("--port", type=int, default=8080, help="port on 127.0.0.1 (default 8080)")
    p.set_defaults(func=run)


def serve(storage: str, port: int) -> None:
    """Block serving optuna-dashboard on 127.0.0.1:``port`` (loopback only: it has no auth)."""
    try:
        from optuna_dashboard import run_server
    except ImportError:
        raise UserError("optuna-dashboard is not installed: pip install 'nas-kd[dashboard]'") from None
    run_server(storage, host="127.0.0.1", port=port)


def run(args: argparse.Namespace) -> int:
    from nas_kd.study import default_storage, load_study

    if not 0 < args.port < 65536:
        raise UserError(f"--port must be 1..65535, got {args.port}")
    study = load_study(args.study, args.storage)  # a wrong name fails here, not in the browser
    storage = args.storage or default_storage(args.study)
    print(f"dashboard: study {study.study_name} at http://127.0.0.1:{args.port}/dashboard (Ctrl-C stops)", flush=True)
    serve(storage, args.port)
    return 0
