"""`nas-kd` command line: argparse subcommands, one module each in `nas_kd.commands`.

Every subcommand module exposes ``register(subparsers)``, which adds its parser and sets
``func=run`` where ``run(args) -> int``. Modules are imported lazily so ``nas-kd --help`` and a
bad option answer fast. Any `UserError` (and any argparse mistake) becomes one line on stderr
and exit code 2; a run that diverged (`NonFiniteLossError`) one line and exit 1; Ctrl-C exit 130.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from nas_kd.errors import EXIT_DIVERGED, EXIT_USAGE, NonFiniteLossError, UserError

__all__ = ["main", "build_parser", "COMMANDS"]

# name -> module in nas_kd.commands; the order is the order in --help.
COMMANDS = ["data", "teacher", "cost", "distill", "search", "finalize", "export", "dashboard"]


# What to change when a command's run diverges and the code that raised did not say (a search's
# trials fail alone: what reaches the CLI is its re-screen or final retrain).
DIVERGED_HINTS = {
    "distill": "try a lower --lr, or a mode with fewer terms (--mode kd)",
    "search": "lower the full schedule's learning rate (--full lr=...) and run the search again",
    "finalize": "run the search again with a lower full-schedule learning rate (--full lr=...)",
}


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a usage mistake as one line (not usage + message) and exit 2."""

    def error(self, message: str):  # noqa: D401 - argparse API
        raise UserError(f"{self.prog}: {message} (see '{self.prog} --help')")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="nas-kd",
        description="Find, distil and ship the best small student CNN for a fixed teacher and budget.",
    )
    from nas_kd import __version__

    parser.add_argument("--version", action="version", version=f"nas-kd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"nas_kd.commands.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"nas_kd.commands.{name}":
                continue  # a command not built yet in this checkout
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    # A Ctrl-C that lands inside a database call makes SQLAlchemy's pool log the interrupted
    # connection reset with a traceback; the CLI already reports the interrupt in one line.
    logging.getLogger("sqlalchemy.pool").setLevel(logging.CRITICAL)
    # And one that lands in a finalizer (SQLAlchemy's weakref callbacks) would be printed and lost.
    from nas_kd.interrupts import keep_lost_interrupts

    keep_lost_interrupts()
    command = None
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        command = args.command
        if not getattr(args, "func", None):
            parser.print_help()
            return EXIT_USAGE
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"nas-kd: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except NonFiniteLossError as e:
        hint = e.hint or DIVERGED_HINTS.get(command, "lower the learning rate")
        print(f"nas-kd: error: {e}: the run diverged; {hint}", file=sys.stderr)
        return EXIT_DIVERGED
    except KeyboardInterrupt:
        print("nas-kd: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
