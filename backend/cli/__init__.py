"""The one console command, ``vigil``. Each area registers its own subcommands; imports are lazy
so that ``vigil --help`` stays fast and a missing optional tool only breaks its own command."""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from backend.cli import progress

# module path -> it defines register(subparsers); order is the order in --help
_COMMAND_MODULES = [
    "backend.cli.service",             # demo, backend run, db upgrade
    "backend.cli.session",             # login, logout
    "gateway.commands",             # gateway run, simulate
    "firmware.tools.commands",      # firmware provision / check, hardware battery
    "backend.evaluation.commands",  # eval hr, eval falls
    "backend.cli.privacy",     # audit verify/anchor, report transparency, policy, retention
    "backend.bench.commands",       # bench models, bench ingest
    "backend.cli.dashboard",        # dashboard screenshots
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vigil", description="Vigil officer-safety system")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bars (none either when stderr is not a terminal)")
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
    args = None
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        progress.set_quiet(args.quiet)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        result = args.func(args)
    except BrokenPipeError:
        # the reader went away (`vigil officer list | head -3`): not an error of ours; stdout is
        # pointed at /dev/null so the interpreter's final flush does not fail again
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141  # as a shell reports a pipe closed on a writer (128 + SIGPIPE)
    except KeyboardInterrupt:
        print("vigil: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - only the expected kinds are answered here; the rest re-raise
        message = expected_error(exc)
        if message is None:
            raise
        print(f"vigil {getattr(args, 'command', None) or ''}".rstrip() + f": {message}", file=sys.stderr)
        return getattr(exc, "code", 1) if isinstance(getattr(exc, "code", None), int) else 1
    return int(result or 0)


def expected_error(exc: BaseException) -> str | None:
    """One line for an error a person can cause and fix (a missing file, a bad setting, a refusal
    of the backend, ...); None for anything else, which is a bug and keeps its traceback."""
    from backend.cli.session import CliError
    from backend.exceptions import VigilBackendError

    if isinstance(exc, CliError):
        return str(exc)
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, FileExistsError)):
        hint = {FileNotFoundError: "check the path", PermissionError: "check its permissions",
                IsADirectoryError: "give a file, not a directory", NotADirectoryError: "check the path",
                FileExistsError: "it is never overwritten: choose another name"}.get(type(exc), "")
        what = f"cannot use {exc.filename}: {exc.strerror or exc}" if exc.filename else str(exc)
        return what + (f" ({hint})" if hint else "")
    if isinstance(exc, VigilBackendError):
        return str(exc)
    try:
        import pydantic
        if isinstance(exc, pydantic.ValidationError):
            fields = "; ".join(f"{'.'.join(str(x) for x in e['loc']) or 'value'}: {e['msg']}" for e in exc.errors())
            return f"invalid settings: {fields} (see the VIGIL_* environment variables)"
    except ImportError:
        pass
    for module, name in (("gateway.exceptions", "GatewayError"), ("models.exceptions", "ModelError")):
        try:
            kind = getattr(importlib.import_module(module), name)
        except ImportError:
            continue
        if isinstance(exc, kind):
            return str(exc)
    database = _database_problem(exc)
    if database:
        return database
    import socket
    if isinstance(exc, (ConnectionError, socket.gaierror)):  # a service of ours (database, broker) not there
        return f"cannot connect: {exc}; is the service running? (VIGIL_DATABASE_URL, VIGIL_MQTT_URL)"
    import httpx
    if isinstance(exc, httpx.HTTPError):
        return f"cannot reach the backend ({type(exc).__name__}: {exc}); is it running? (--api or VIGIL_API)"
    return None



# PostgreSQL's SQLSTATEs a person fixes with a setting: no connection (08), wrong role or password
# (28), no such database (3D000), the server starting or stopping (57P0x)
_DATABASE_SETUP_STATES = ("08", "28", "3D000", "57P0")


def _database_problem(exc: BaseException) -> str | None:
    try:
        import sqlalchemy.exc
    except ImportError:
        return None
    if not isinstance(exc, sqlalchemy.exc.DBAPIError):
        return None
    state = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None) or ""
    if not state.startswith(_DATABASE_SETUP_STATES):
        return None  # a query's error is a bug: it keeps its traceback
    said = str(exc.orig).strip().splitlines()[-1] if str(exc.orig).strip() else type(exc.orig).__name__
    return (f"cannot use the database: {said} (check VIGIL_DATABASE_URL; `vigil db upgrade` creates the "
            "database and its tables)")
