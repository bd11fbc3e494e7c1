"""``vigil bench models``, ``ingest``, ``pipeline``, ``gateway``, ``fuzz``, ``soak``, ``api`` and ``faults``."""
from __future__ import annotations

import argparse
import os
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

    pipeline = sub.add_parser("pipeline", help="the backend's CPU per frame in one process (no broker, no database): "
                                               "stable figures for comparing changes")
    pipeline.add_argument("--devices", type=int, default=2000, help="simulated wearables (default 2000, at most 20000)")
    pipeline.add_argument("--seconds", type=float, default=60.0, help="simulated seconds of telemetry (default 60)")
    pipeline.add_argument("--gc", choices=("tuned", "default"), default="tuned",
                          help="the backend's garbage-collector settings (tuned, as `vigil backend run`) or CPython's")
    pipeline.add_argument("--out", type=Path, default=Path("artifacts/bench"), help="folder of the result file")
    pipeline.add_argument("--tag", default="", help="suffix of the result file (pipeline-<tag>.json)")
    pipeline.set_defaults(func=lambda a: _pipeline(a))

    ingest = sub.add_parser("ingest", help="50 Hz wearables -> Mosquitto -> backend process(es): ramp, loss, latency, CPU, memory")
    ingest.add_argument("--steps", type=int, nargs="+", default=None, help="devices per ramp step (default 500 1000 2000 5000 10000)")
    ingest.add_argument("--step-seconds", type=float, default=25.0, help="length of each step (default 25)")
    ingest.add_argument("--generators", type=int, default=2, help="load generator processes (default 2)")
    ingest.add_argument("--shards", type=int, default=1, help="backend processes, each owning a share of the agencies")
    ingest.add_argument("--agencies", type=int, default=4, help="agencies the devices are spread over (default 4)")
    ingest.add_argument("--ceiling-seconds", type=float, default=8.0, help="length of the broker-only ceiling run")
    ingest.add_argument("--keep-going", action="store_true", help="run every step even after the backend fell behind")
    ingest.add_argument("--database-url", default=None, help="server for the throw-away vigil_bench_* database "
                        "(default VIGIL_DATABASE_URL, else 127.0.0.1:5432)")
    ingest.add_argument("--detection-worker", choices=("inline", "thread", "process"), default="inline",
                        help="the backend's VIGIL_DETECTION_WORKER (default inline)")
    ingest.add_argument("--out", type=Path, default=Path("artifacts/bench"))
    ingest.add_argument("--tag", default="", help="suffix of the result files (ingest-<tag>.json)")
    ingest.set_defaults(func=lambda a: _ingest(a))

    gateway = sub.add_parser("gateway", help="measure frames/s one gateway sustains and reconnect time")
    gateway.add_argument("--mqtt-url", default=os.environ.get("VIGIL_GATEWAY_MQTT_URL"),
                       help="broker (default: a private Mosquitto)")
    gateway.add_argument("--devices", type=int, nargs="+", default=[10, 40, 80],
                       help="device counts to try, each at 50 Hz real time")
    gateway.add_argument("--seconds", type=float, default=20.0, help="measurement window per step")
    gateway.add_argument("--link-losses", type=int, default=10, help="link losses for the reconnect timing")
    gateway.add_argument("--speed", type=float, default=1.0,
                       help="simulated seconds per real second (x devices = equivalent 50 Hz devices)")
    gateway.set_defaults(func=lambda a: _gateway(a))

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

    api = sub.add_parser("schemathesis", help="the HTTP API fuzzed from its OpenAPI schema as every role (no 5xx, no schema violation)")
    api.add_argument("--max-examples", type=int, default=100, help="generated requests per operation and caller")
    api.add_argument("--out", type=Path, default=Path("artifacts/schemathesis"))
    api.set_defaults(func=lambda a: __import__("backend.bench.api_fuzz", fromlist=["main"]).main(a.max_examples, a.out))

    from backend.bench.faults import register as register_faults
    register_faults(sub)


def _models(args: argparse.Namespace) -> int:
    from backend.bench.models_bench import run
    run(tuple(args.batch), args.data, args.out, not args.no_libraries)
    return 0


def _pipeline(args: argparse.Namespace) -> int:
    from backend.bench.pipeline_bench import run
    if not 1 <= args.devices <= 20_000 or args.seconds < 10:
        raise SystemExit("vigil bench pipeline: 1 to 20,000 devices and at least 10 simulated seconds "
                         "(the first window needs 9 s)")
    run(args.devices, args.seconds, args.gc, args.out, args.tag)
    return 0


def _ingest(args: argparse.Namespace) -> int:
    from backend.bench.ingest_bench import DEFAULT_STEPS, BenchConfig, run
    config = BenchConfig(steps=tuple(args.steps or DEFAULT_STEPS), step_s=args.step_seconds, generators=args.generators,
                         shards=args.shards, agencies=args.agencies, ceiling_s=args.ceiling_seconds,
                         keep_going=args.keep_going, out=args.out, database_url=args.database_url, tag=args.tag,
                         detection_worker=args.detection_worker)
    result = run(config)
    return 0 if all(r.lost == 0 for r in result.steps) else 1


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


def _gateway(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    from backend.bench.gateway_bench import run_benchmark

    logging.basicConfig(level=logging.WARNING)
    asyncio.run(run_benchmark(args.mqtt_url, args.devices, args.seconds, args.link_losses, args.speed))
    return 0
