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

    fuzz = sub.add_parser("fuzz", help="coverage-guided fuzzing of the frame decoder (atheris)")
    fuzz.add_argument("--runs", type=int, default=1_000_000)
    fuzz.add_argument("--corpus", type=Path, default=Path("artifacts/fuzz/frames"))
    fuzz.set_defaults(func=lambda a: _fuzz(a))

    soak = sub.add_parser("soak", help="a long shift: simulated devices against a backend process; memory and loss report")
    soak.add_argument("--devices", type=int, default=1000)
    soak.add_argument("--minutes", type=float, default=60.0)
    soak.add_argument("--sample-s", type=float, default=60.0, help="how often memory and queues are sampled")
    soak.add_argument("--out", type=Path, default=Path("artifacts/soak"))
    soak.set_defaults(func=lambda a: __import__("backend.bench.soak", fromlist=["main"]).main(a.devices, a.minutes, a.sample_s, a.out))


def _models(args: argparse.Namespace) -> int:
    from backend.bench.models_bench import run
    run(tuple(args.batch), args.data, args.out, not args.no_libraries)
    return 0


def _fuzz(args: argparse.Namespace) -> int:
    """Seed the corpus with the golden vectors, run libFuzzer, print what it did."""
    import json
    import re
    import subprocess
    import sys
    import time

    try:
        import atheris  # noqa: F401
    except ImportError:
        print("atheris is not installed: pip install -e '.[test]'", file=sys.stderr)
        return 2
    args.corpus.mkdir(parents=True, exist_ok=True)
    vectors = Path(__file__).resolve().parents[2] / "tests" / "vectors" / "frames.json"
    if vectors.exists():
        for v in json.loads(vectors.read_text())["vectors"]:
            (args.corpus / f"golden-{v['name']}").write_bytes(bytes.fromhex(v["frame"]))
    print(f"fuzzing the frame decoder for {args.runs:,} inputs (corpus {args.corpus}) ...", flush=True)
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "backend.bench.fuzz_frames", f"-runs={args.runs}", "-print_final_stats=1", str(args.corpus)],
                          capture_output=True, text=True)
    elapsed = time.monotonic() - start
    stats = dict(re.findall(r"^stat::(\w+):\s+(\d+)", proc.stderr, re.M))
    done = re.findall(r"Done (\d+) runs", proc.stderr)
    runs = done[-1] if done else stats.get("number_of_executed_units", "?")
    edges = re.findall(r"cov: (\d+)", proc.stderr)
    print(f"exit code {proc.returncode}; runs {runs}; {elapsed:.0f} s; coverage edges {edges[-1] if edges else '?'}; "
          f"corpus {len(list(args.corpus.iterdir()))} inputs")
    if proc.returncode != 0:
        print(proc.stderr[-3000:], file=sys.stderr)
    return proc.returncode
