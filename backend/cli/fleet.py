"""``vigil officer …``, ``vigil device …`` (fleet admins, over the API) and ``vigil user create`` /
``vigil user enrolment`` (straight to the database: the first admin of an agency, auditors, and
enrolment codes; backend/identity/auth.py says who may create whom)."""
from __future__ import annotations

import argparse
import getpass
import json
import os
import re
import sys

import httpx

from backend.cli.progress import track
from backend.cli.session import DEFAULT_API, CliError, device_id, error_text, refused, token_for
from models.thresholds import PRODUCT_PLACEMENT


def register(subparsers: argparse._SubParsersAction) -> None:
    def api_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--api", default=os.environ.get("VIGIL_API", DEFAULT_API), help="backend base URL (VIGIL_API)")
        p.add_argument("--token", default=None, help="access token (default: VIGIL_TOKEN, else the one `vigil login` kept)")
        p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    officer = subparsers.add_parser("officer", help="officers of your agency (calls the API)")
    osub = officer.add_subparsers(dest="officer_command", metavar="COMMAND", required=True)
    p = osub.add_parser("create", help="create an officer")
    p.add_argument("--badge", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--unit", default="")
    api_args(p)
    p.set_defaults(func=lambda a: _call(a, "POST", "/api/v1/officers", {"badge": a.badge, "name": a.name, "unit": a.unit}))
    p = osub.add_parser("list", help="list officers")
    api_args(p)
    p.set_defaults(func=lambda a: _call(a, "GET", "/api/v1/officers"))

    device = subparsers.add_parser("device", help="wearables of your agency (calls the API)")
    dsub = device.add_subparsers(dest="device_command", metavar="COMMAND", required=True)
    p = dsub.add_parser("provision", help="create a device and its key (the key is printed once); with --count, "
                                          "a fleet of consecutive ids with their keys written to --keys-out")
    p.add_argument("device_id", type=device_id, help="the id in its frames (decimal or 0x...); the first of --count")
    p.add_argument("--placement", default=PRODUCT_PLACEMENT, help=f"where it is worn (default {PRODUCT_PLACEMENT}, the product's placement)")
    p.add_argument("--count", type=int, default=1, help="provision this many devices, device_id, device_id+1, ...")
    p.add_argument("--keys-out", default=None, metavar="FILE",
                   help='write {"<device id>": "<64 hex key>"} to FILE (created readable only by you; '
                        "the format `vigil simulate --keys` reads) instead of printing the keys")
    api_args(p)
    p.set_defaults(func=_provision)
    p = dsub.add_parser("assign", help="assign a device to an officer for a shift")
    p.add_argument("device_id", type=device_id)
    p.add_argument("--officer", type=int, required=True, help="officer id")
    p.add_argument("--until", default=None, help="end of the shift, ISO 8601 (default: open)")
    api_args(p)
    p.set_defaults(func=lambda a: _call(a, "PUT", f"/api/v1/devices/{a.device_id}/assignment",
                                        {"officer_id": a.officer, "ends_at": a.until}))
    p = dsub.add_parser("unassign", help="end a device's current assignment")
    p.add_argument("device_id", type=device_id)
    api_args(p)
    p.set_defaults(func=lambda a: _call(a, "DELETE", f"/api/v1/devices/{a.device_id}/assignment"))
    p = dsub.add_parser("list", help="devices with firmware, battery, last seen and officer")
    api_args(p)
    p.set_defaults(func=lambda a: _call(a, "GET", "/api/v1/devices"))
    p = dsub.add_parser("firmware", help="firmware in the fleet: versions with counts, the current release, the devices "
                                         "on an older one and who wears them")
    api_args(p)
    p.set_defaults(func=lambda a: _call(a, "GET", "/api/v1/devices/firmware"))
    p = dsub.add_parser("retire", help="retire a device: its frames are refused from now on")
    p.add_argument("device_id", type=device_id)
    api_args(p)
    p.set_defaults(func=lambda a: _call(a, "POST", f"/api/v1/devices/{a.device_id}/retire"))

    user = subparsers.add_parser("user", help="people's accounts (direct database access, for bootstrapping)")
    usub = user.add_subparsers(dest="user_command", metavar="COMMAND", required=True)
    p = usub.add_parser("create", help="create a fleet admin's, supervisor's or auditor's account (password from "
                                       "VIGIL_PASSWORD or a prompt); officers enrol themselves")
    p.add_argument("username")
    # No officer role: an account opens an officer's own biometric data, so only the officer binds
    # it, by redeeming an enrolment code (`vigil user enrolment`, POST /api/v1/auth/enrol).
    p.add_argument("--role", required=True, choices=("supervisor", "fleet_admin", "auditor"))
    p.add_argument("--agency", required=True, help="created if it does not exist")
    p.set_defaults(func=_create_user)
    p = usub.add_parser("enrolment", help="a one-time code (printed once) with which an officer creates their own account")
    p.add_argument("--agency", required=True)
    p.add_argument("--officer-id", type=int, required=True)
    p.set_defaults(func=_issue_enrolment)

    gateway = subparsers.add_parser("gateways", help="registered gateways of your agency: list, register, retire (calls the API; "
                                                     "`vigil gateway` runs one)")
    gsub = gateway.add_subparsers(dest="gateway_command", metavar="COMMAND", required=True)
    p = gsub.add_parser("list", help="gateways: last frame, devices served and heard")
    api_args(p)
    p.set_defaults(func=lambda a: _call(a, "GET", "/api/v1/gateways"))
    p = gsub.add_parser("register", help="register a gateway (its token and MQTT password are printed once); "
                                         "the broker admits it at once")
    p.add_argument("gateway_id")
    p.add_argument("--devices", type=device_id, nargs="*", default=[], metavar="DEVICE_ID",
                   help="the devices it may serve (decimal or 0x...)")
    api_args(p)
    p.set_defaults(func=lambda a: _call(a, "POST", "/api/v1/gateways", {"gateway_id": a.gateway_id, "devices": a.devices}))
    p = gsub.add_parser("retire", help="retire a gateway: its token stops working, the broker disconnects and refuses it")
    p.add_argument("gateway_id")
    api_args(p)
    p.set_defaults(func=lambda a: _call(a, "POST", f"/api/v1/gateways/{a.gateway_id}/retire"))

    brk = subparsers.add_parser("broker", help="the MQTT broker's dynamic security (backend/identity/broker.py)")
    bsub = brk.add_subparsers(dest="broker_command", metavar="COMMAND", required=True)
    p = bsub.add_parser("init", help="write the dynamic security plugin's first file: its admin, the backend's client "
                                     "and the registry's gateways (a new broker; the running backend keeps it current)")
    p.add_argument("--out", default=".vigil/broker/dynamic-security.json",
                   help="file to create (never overwritten: the broker keeps its live state in it)")
    # the admin is the backend's own settings (VIGIL_BROKER_ADMIN_USERNAME, VIGIL_BROKER_ADMIN_PASSWORD): the
    # backend administers the broker as the admin written here
    p.set_defaults(func=_broker_init)

def _call(args: argparse.Namespace, method: str, path: str, body: dict | None = None) -> int:
    token, source = token_for(args)
    try:
        response = httpx.request(method, args.api.rstrip("/") + path, json=body,
                                 headers={"Authorization": f"Bearer {token}"}, timeout=30)
    except httpx.HTTPError as exc:
        raise CliError(f"cannot reach {args.api} ({type(exc).__name__}): is the backend running? (--api or VIGIL_API)") from None
    if response.status_code >= 400:
        shown = re.sub(r"/devices/(\d+)", lambda m: "/devices/" + _shown("device_id", int(m.group(1))), path)  # ids as on the pages
        raise CliError(refused(response.status_code, source, args.api) or f"{method} {shown}: {response.status_code} {error_text(response)}")
    data = response.json() if response.content else None
    if args.json or not isinstance(data, (list, dict)):
        print(json.dumps(data, indent=2, default=str))
    elif isinstance(data, dict):
        _record(data)
    else:
        _table(data)
    return 0


def _record(data: dict) -> None:
    """One object, a field a line, ids as the pages show them."""
    width = max((len(k) for k in data), default=0)
    for key, value in data.items():
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            print(f"{key}:")  # rows of their own (the firmware overview's versions and devices)
            _table(value)
            continue
        value = _shown(key, value)
        if isinstance(value, dict):
            value = ", ".join(f"{k}={_shown(k, v)}" for k, v in value.items())
        print(f"{key.ljust(width)}  {'-' if value is None else value}")


def _provision(args: argparse.Namespace) -> int:
    """One device (key printed, as before), or --count devices each provisioned through the API
    (each one audited there) with the keys written to --keys-out, mode 0600, never printed."""
    if args.count < 1 or args.device_id + args.count - 1 > 0xFFFFFFFF:
        print("--count must be >= 1 and the last id a 32-bit unsigned integer", file=sys.stderr)
        return 2
    if args.keys_out is None:
        if args.count != 1:
            print("--count needs --keys-out FILE: a fleet's keys go to a file, not the terminal", file=sys.stderr)
            return 2
        return _call(args, "POST", "/api/v1/devices", {"device_id": args.device_id, "placement": args.placement})
    token, _ = token_for(args)
    try:  # created before anything is provisioned, owner-only from the first byte; never overwritten
        fd = os.open(args.keys_out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        print(f"cannot create {args.keys_out}: {exc.strerror}" + (" (it exists: keys are never overwritten)"
              if isinstance(exc, FileExistsError) else ""), file=sys.stderr)
        return 2
    keys: dict[str, str] = {}
    failed = None
    with os.fdopen(fd, "w") as out, httpx.Client(base_url=args.api.rstrip("/"), timeout=30,
                                                  headers={"Authorization": f"Bearer {token}"}) as http:
        for device_id in track(range(args.device_id, args.device_id + args.count), "provisioning devices"):
            try:
                response = http.post("/api/v1/devices", json={"device_id": device_id, "placement": args.placement})
            except httpx.HTTPError as exc:
                failed = f"cannot reach {args.api}: {exc}"
                break
            if response.status_code != 201:
                failed = f"device {device_id}: {response.status_code} {error_text(response)}"
                break
            keys[str(device_id)] = response.json()["key_hex"]
        out.write(json.dumps(keys, indent=1) + "\n")  # whatever was created: a key is shown only once
    summary = {"provisioned": len(keys), "first": args.device_id, "last": args.device_id + len(keys) - 1 if keys else None,
               "keys_out": args.keys_out}
    print(json.dumps(summary) if args.json else
          f"provisioned {len(keys)} device(s) {args.device_id}..{args.device_id + len(keys) - 1}; keys in {args.keys_out} (mode 0600)")
    if failed:
        print(f"stopped: {failed}", file=sys.stderr)
        return 1
    return 0


def _table(rows: list[dict]) -> None:
    if not rows:
        print("(none)")
        return
    rows = [{c: _shown(c, v) for c, v in r.items()} for r in rows]
    cols = list(rows[0])
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in cols}
    print("  ".join(c.ljust(widths[c]) for c in cols))
    for r in rows:
        print("  ".join(str(r.get(c, "") if r.get(c) is not None else "-").ljust(widths[c]) for c in cols))


def _shown(column: str, value):
    """Device ids in hex, as on the pages and on the device's label (--json keeps the API's numbers)."""
    from backend.identity.fleet import device_label
    if column == "device_id" and isinstance(value, int):
        return device_label(value)
    if column in ("devices", "devices_heard") and isinstance(value, list):
        return ", ".join(device_label(v) if isinstance(v, int) else str(v) for v in value)
    return value


def _create_user(args: argparse.Namespace) -> int:
    import asyncio

    from backend.identity import auth, fleet
    from backend.db import engine as db
    from backend.app.config import BackendSettings

    password = os.environ.get("VIGIL_PASSWORD") or getpass.getpass(f"password for {args.username}: ")
    settings = BackendSettings()

    async def main() -> None:
        engine = db.create_engine(settings)
        try:
            await fleet.ensure_agency(engine, args.agency)
            user = await auth.create_user(engine, args.username, password, args.role, args.agency, actor=_cli_actor())
        finally:
            await engine.dispose()
        print(f"user {user.username} ({user.role}, agency {user.agency_id}) created; sign in at POST /api/v1/auth/token")

    asyncio.run(main())
    return 0


def _cli_actor() -> str:
    """Who ran the bootstrap command, for the audit chain."""
    return f"cli:{getpass.getuser()}"


def _issue_enrolment(args: argparse.Namespace) -> int:
    import asyncio
    import datetime as dt

    from backend.identity import auth
    from backend.db import engine as db
    from backend.app.config import BackendSettings

    settings = BackendSettings()

    async def main() -> None:
        engine = db.create_engine(settings)
        try:
            issued = await auth.issue_enrolment(engine, args.agency, args.officer_id, _cli_actor(),
                                                settings.enrolment_code_ttl_s, dt.datetime.now(dt.timezone.utc))
        finally:
            await engine.dispose()
        print(f"enrolment code for officer {issued.officer_id}: {issued.code} (valid until {issued.expires_at:%Y-%m-%d %H:%M} UTC, "
              "once); hand it to the officer in person, who redeems it at POST /api/v1/auth/enrol")

    asyncio.run(main())
    return 0


def _broker_init(args: argparse.Namespace) -> int:
    import asyncio
    from pathlib import Path
    from urllib.parse import urlsplit

    from backend.identity import broker
    from backend.identity.keys import with_keys
    from backend.db import engine as db
    from backend.app.config import BackendSettings

    settings = with_keys(BackendSettings())
    backend = urlsplit(settings.mqtt_url)
    if not (backend.username and backend.password):
        raise CliError("the backend's MQTT user and password come from VIGIL_MQTT_URL (mqtt://user:pass@host:port)")
    if not settings.broker_admin_username:
        raise CliError("set VIGIL_BROKER_ADMIN_USERNAME and VIGIL_BROKER_ADMIN_PASSWORD: the broker's admin, as the backend "
                       "will use it")
    admin_user, admin_password = settings.broker_admin_username, settings.broker_admin_password.get_secret_value()
    if Path(args.out).exists():
        raise CliError(f"{args.out} exists: the broker keeps its live state there; the running backend reconciles it")

    async def main() -> int:
        engine = db.create_engine(settings)
        try:
            agencies = None if "+" in settings.agencies else settings.agencies
            clients = [broker.backend_client(backend.username, backend.password)]
            clients += await broker.registry_clients(engine, settings.secret_key.get_secret_value(), agencies)
        finally:
            await engine.dispose()
        path = broker.write_dynsec_config(Path(args.out), broker.dynsec_config(admin_user, admin_password, clients))
        print(f"wrote {path} (owner-only): {len(clients) - 1} gateway(s). In mosquitto.conf:\n"
              f"  plugin /usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so\n  plugin_opt_config_file {path.resolve()}\n"
              "and run the backend with the same VIGIL_BROKER_ADMIN_USERNAME and VIGIL_BROKER_ADMIN_PASSWORD")
        return 0

    return asyncio.run(main())
