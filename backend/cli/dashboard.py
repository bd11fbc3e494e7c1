"""``vigil dashboard screenshots``: a PNG of each dashboard page and state, on the demo's system
(backend/dashboard/screenshots.py)."""
from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    dash = subparsers.add_parser("dashboard", help="the web dashboard")
    dsub = dash.add_subparsers(dest="dashboard_command", metavar="COMMAND", required=True)
    shots = dsub.add_parser("screenshots", help="start the demo's system and write a PNG of each page as each role "
                                                "(Debian's Chromium via Playwright); prints each path")
    shots.add_argument("--out", type=Path, default=Path("artifacts/screenshots"), help="folder for the PNGs (default artifacts/screenshots)")
    shots.add_argument("--officers", type=_at_least_8, default=8,
                       help="simulated officers (default 8, the fewest that play every scenario once)")
    shots.set_defaults(func=_screenshots)


def _at_least_8(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 8:
        raise argparse.ArgumentTypeError("at least 8: the pages' states come from every scenario of the shift")
    return value


def _screenshots(args: argparse.Namespace) -> int:
    from backend.cli.session import CliError
    from backend.dashboard.screenshots import ScreenshotError, run_screenshots

    try:
        return run_screenshots(args.out, args.officers)
    except ScreenshotError as exc:
        raise CliError(str(exc)) from exc
