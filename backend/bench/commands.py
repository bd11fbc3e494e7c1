"""``vigil bench models`` and ``vigil bench ingest``."""
from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    bench = subparsers.add_parser("bench", help="benchmarks that print their figures")
    sub = bench.add_subparsers(dest="bench_command", metavar="WHAT", required=True)
    models = sub.add_parser("models", help="device-windows/s of the models at several batch sizes vs HeartPy and NeuroKit2")
    models.add_argument("--batch", type=int, nargs="+", default=[1, 100, 10_000])
    models.add_argument("--data", type=Path, default=None, help="folder of the IEEE SPC 2015 recordings")
    models.add_argument("--out", type=Path, default=Path("artifacts/bench"))
    models.add_argument("--no-libraries", action="store_true")
    models.set_defaults(func=lambda a: _models(a))


def _models(args: argparse.Namespace) -> int:
    from backend.bench.models_bench import run
    run(tuple(args.batch), args.data, args.out, not args.no_libraries)
    return 0
