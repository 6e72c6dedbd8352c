"""One module per `nas-kd` subcommand: each has ``register(subparsers)`` and ``run(args) -> int``."""
