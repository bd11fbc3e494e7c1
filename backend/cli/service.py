"""Backend subcommands of ``vigil``: demo, backend run, db upgrade.

``backend run`` checks its database role first: in production it refuses to start as a superuser,
a member of the tables' owner or any role beyond vigil_api's grants (development warns)."""
from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    demo = subparsers.add_parser("demo", help="the whole system with simulated officers on this machine")
    demo.add_argument("--officers", type=int, default=8, help="simulated officers on shift (default 8: every scenario once)")
    demo.add_argument("--duration", type=float, default=150.0, help="seconds to run (default 150)")
    demo.add_argument("--port", type=int, default=8000, help="HTTP port of the backend (a free one if taken)")
    demo.set_defaults(func=lambda a: __import__("backend.local.demo", fromlist=["run_demo"]).run_demo(a.officers, a.duration, a.port))

    backend = subparsers.add_parser("backend", help="the backend service")
    bsub = backend.add_subparsers(dest="backend_command", metavar="COMMAND", required=True)
    run = bsub.add_parser("run", help="run ingest, detection and the API (settings: VIGIL_* environment)")
    run.add_argument("--no-migrate", action="store_true", help="do not run database migrations first")
    run.set_defaults(func=_run_backend)

    dbp = subparsers.add_parser("db", help="database administration")
    dsub = dbp.add_subparsers(dest="db_command", metavar="COMMAND", required=True)
    up = dsub.add_parser("upgrade", help="create the database if needed and apply migrations")
    up.set_defaults(func=_db_upgrade)

    from backend.cli import fleet as fleet_cli
    fleet_cli.register(subparsers)  # officer, device, user, broker


async def _runtime_role_problems(settings) -> list[str]:
    from backend.db import engine as db

    engine = db.create_engine(settings)
    try:
        return await db.runtime_role_problems(engine)
    finally:
        await engine.dispose()


def _run_backend(args: argparse.Namespace) -> int:
    import asyncio
    import logging
    import signal
    import sys

    from backend.db import engine as db
    from backend.app.config import BackendSettings
    from backend.app.runtime import settle_heap
    from backend.app.server import serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = BackendSettings()
    if not args.no_migrate:
        db.upgrade(settings)
    problems = asyncio.run(_runtime_role_problems(settings))
    if problems and settings.environment == "production":
        print("vigil backend run: refused: the backend must connect as a role that owns nothing and holds only "
              "vigil_api's grants (VIGIL_DATABASE_URL); migrations use VIGIL_MIGRATION_DATABASE_URL.", file=sys.stderr)
        for p in problems:
            print(f"  {p}", file=sys.stderr)
        print("  fix: create role vigil_backend login password '...' in role vigil_api; and connect as it", file=sys.stderr)
        return 2
    for p in problems:
        logging.getLogger("vigil.backend").warning("not least privilege (allowed in development only): %s", p)

    async def main() -> int:
        from backend.app.waiting import wait_for_any

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with serve(settings, log_level="info") as backend:
            log = logging.getLogger("vigil.backend")
            log.info("API at %s/docs", backend.url)
            runtime = backend.runtime
            while not (runtime.registry.loaded or stop.is_set() or runtime.dead.is_set()):
                await asyncio.sleep(0.1)
            settle_heap()
            await wait_for_any(stop, runtime.dead)
            if runtime.dead.is_set():  # a task kept failing: exit non-zero so the service manager restarts us
                log.critical("stopping: %s", runtime.fatal)
                return 1
        return 0

    return asyncio.run(main())


def _db_upgrade(args: argparse.Namespace) -> int:
    import logging

    from backend.db import engine as db
    from backend.app.config import BackendSettings

    logging.basicConfig(level=logging.INFO)
    db.upgrade(BackendSettings())
    return 0
