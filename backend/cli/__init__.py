"""The one console command, ``vigil``. Each area registers its own subcommands; imports are lazy
so that ``vigil --help`` stays fast and a missing optional tool only breaks its own command."""
from __future__ import annotations

import argparse
import importlib
import os

# module path -> it defines register(subparsers); order is the order in --help
_COMMAND_MODULES = [
    "backend.cli.service",             # demo, backend run, db upgrade
    "gateway.commands",             # gateway run, simulate
    "firmware.tools.commands",      # firmware provision / check, hardware battery
    "backend.evaluation.commands",  # eval hr, eval falls
    "backend.cli.privacy",     # audit verify/anchor, report transparency, policy, retention
    "backend.bench.commands",       # bench models, bench ingest
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vigil", description="Vigil officer-safety system")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and name.startswith(exc.name):
                continue  # that area has no commands yet
            raise
        module.register(sub)
    return parser


# One BLAS thread per process: the models batch over devices themselves, and extra BLAS threads
# fight ingest and the broker for the same cores (heart rate for 10,000 devices measured 0.42 s
# with one thread, 3.1 s with two on a busy 2-core machine). Set before numpy is first imported;
# an explicit setting in the environment wins. Spawned children inherit it.
_BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def main(argv: list[str] | None = None) -> int:
    for name in _BLAS_THREAD_VARIABLES:
        os.environ.setdefault(name, "1")
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    result = args.func(args)
    return int(result or 0)

