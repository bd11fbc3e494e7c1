"""``vigil login`` / ``vigil logout``: a person's access token for the API commands, kept per user
(``~/.config/vigil/tokens.json``, readable only by them, one token per backend URL) so no one
copies tokens out of curl. ``--token`` and ``VIGIL_TOKEN`` still win over the kept one.

Also the argument types the commands share, whose errors say what to type instead."""
from __future__ import annotations

import argparse
import datetime as dt
import getpass
import json
import os
import sys
from pathlib import Path

import httpx

DEFAULT_API = "http://127.0.0.1:8000"


class CliError(Exception):
    """An expected failure of a command: printed as one line (``vigil: …``), exit status ``code``."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


def device_id(text: str) -> int:
    """A device id as typed (gateway/config.py parse_device_id), for argparse."""
    from gateway.config import parse_device_id
    try:
        return parse_device_id(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def tokens_file() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "vigil" / "tokens.json"


def _read() -> dict:
    try:
        return json.loads(tokens_file().read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise CliError(f"cannot read {tokens_file()}: {exc}; remove it and run `vigil login` again") from None


def _write(kept: dict) -> None:
    path = tokens_file()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(kept, out, indent=1)
    os.replace(tmp, path)


def _key(api: str) -> str:
    return api.rstrip("/")


def token_for(args: argparse.Namespace) -> tuple[str, str]:
    """(token, where it came from) for an API command, or a CliError saying how to sign in."""
    if getattr(args, "token", None):
        return args.token, "--token"
    if os.environ.get("VIGIL_TOKEN"):
        return os.environ["VIGIL_TOKEN"], "VIGIL_TOKEN"
    kept = _read().get(_key(args.api))
    if kept and kept.get("token"):
        return kept["token"], "login"
    raise CliError(f"not signed in to {_key(args.api)}: run `vigil login --api {_key(args.api)}` "
                   "(or pass --token / set VIGIL_TOKEN)", 2)


def refused(status: int, source: str, api: str) -> str | None:
    """What to do about a 401, by where the token came from."""
    if status != 401:
        return None
    if source == "login":
        return f"your sign-in to {_key(api)} expired or was revoked: run `vigil login --api {_key(api)}` again"
    return f"the token from {source} was refused (expired or revoked): sign in again with `vigil login`"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("login", help="sign in to a backend; the token is kept for the other commands (this user only)")
    p.add_argument("--api", default=os.environ.get("VIGIL_API", DEFAULT_API), help="backend base URL (VIGIL_API)")
    p.add_argument("--username", default=None, help="default: asked")
    p.set_defaults(func=_login)
    p = subparsers.add_parser("logout", help="revoke and forget the token kept by `vigil login`")
    p.add_argument("--api", default=os.environ.get("VIGIL_API", DEFAULT_API), help="backend base URL (VIGIL_API)")
    p.set_defaults(func=_logout)


def _login(args: argparse.Namespace) -> int:
    username = args.username or input("username: ").strip()
    password = os.environ.get("VIGIL_PASSWORD") or getpass.getpass(f"password for {username}: ")
    api = _key(args.api)
    try:
        response = httpx.post(api + "/api/v1/auth/token", data={"username": username, "password": password}, timeout=30)
    except httpx.HTTPError as exc:
        raise CliError(f"cannot reach {api} ({type(exc).__name__}): is the backend running? (--api or VIGIL_API)") from None
    if response.status_code == 401:
        raise CliError(f"sign-in refused: wrong username or password for {username!r}")
    if response.status_code >= 400:
        raise CliError(f"sign-in failed: {response.status_code} {error_text(response)}")
    body = response.json()
    expires = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=body.get("expires_in", 0))
    kept = _read()
    kept[api] = {"token": body["access_token"], "username": username, "role": body.get("role"),
                 "expires_at": expires.isoformat(timespec="seconds")}
    _write(kept)
    print(f"signed in to {api} as {username} ({body.get('role')}, agency {body.get('agency')}) until "
          f"{expires:%Y-%m-%d %H:%M} UTC; token kept in {tokens_file()} (readable only by you)")
    return 0


def _logout(args: argparse.Namespace) -> int:
    api = _key(args.api)
    kept = _read()
    entry = kept.pop(api, None)
    if entry is None:
        print(f"not signed in to {api}")
        return 0
    try:
        httpx.post(api + "/api/v1/auth/logout", headers={"Authorization": f"Bearer {entry['token']}"}, timeout=10)
        revoked = True
    except httpx.HTTPError:
        revoked = False
    _write(kept)
    print(f"signed out of {api}" + ("" if revoked else " (the backend could not be reached: the token expires on its own)"))
    return 0


def error_text(response: httpx.Response) -> str:
    """A backend's error answer as one line: a string detail, a policy refusal's reason, or each
    invalid field with what is wrong with it (FastAPI's 422 list)."""
    try:
        detail = response.json().get("detail")
    except ValueError:
        return response.text.strip()[:300]
    if isinstance(detail, list):
        parts = []
        for d in detail:
            if isinstance(d, dict):
                where = ".".join(str(x) for x in d.get("loc", [])[1:]) or "request"
                parts.append(f"{where}: {d.get('msg', 'invalid')}")
            else:
                parts.append(str(d))
        return "; ".join(parts)
    if isinstance(detail, dict):
        return str(detail.get("reason") or detail.get("detail") or json.dumps(detail))
    return str(detail)


def fail(message: str, code: int = 1) -> int:
    print(f"vigil: {message}", file=sys.stderr)
    return code
