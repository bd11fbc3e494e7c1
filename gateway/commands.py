"""``vigil gateway run`` and ``vigil simulate`` (registered by backend/cli/__init__.py)."""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import logging
import os
import signal
import sys
from pathlib import Path

log = logging.getLogger("vigil.gateway.cli")

DEFAULT_FIRST_DEVICE_ID = 0x00C0FF01


def _device_id(text: str) -> int:
    from gateway.config import parse_device_id
    try:
        return parse_device_id(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def register(subparsers: argparse._SubParsersAction) -> None:
    gateway = subparsers.add_parser("gateway", help="BLE-to-MQTT gateway")
    gsub = gateway.add_subparsers(dest="gateway_command", metavar="ACTION")
    run = gsub.add_parser("run", help="run the gateway (settings: VIGIL_GATEWAY_* environment / --config)")
    run.add_argument("--config", type=Path, help="dotenv file of VIGIL_GATEWAY_* settings (environment wins)")
    run.add_argument("--log-level", default="INFO")
    run.set_defaults(func=_cmd_gateway_run)
    gateway.set_defaults(func=lambda args: gateway.print_help() or 2)

    sim = subparsers.add_parser("simulate", help="simulated officers' wearables (virtual BlueZ + gateway, or MQTT)")
    sim.add_argument("--officers", type=int, default=1)
    sim.add_argument("--scenario", default="shift",
                     help="a scenario name, or 'shift' for one of each in turn (see gateway/sim/scenarios.py)")
    sim.add_argument("--via", choices=("bluez", "mqtt"), default="bluez",
                     help="bluez: virtual BlueZ + a real gateway; mqtt: straight to the broker (load)")
    sim.add_argument("--duration", type=float, default=0.0, help="seconds to run (0: until Ctrl-C)")
    sim.add_argument("--speed", type=float, default=1.0, help="simulated seconds per real second")
    sim.add_argument("--first-device-id", type=_device_id, default=DEFAULT_FIRST_DEVICE_ID)
    sim.add_argument("--keys", type=Path, help='JSON {"<device id>": "<64 hex key>"}; default: demo keys')
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--agency", default=os.environ.get("VIGIL_GATEWAY_AGENCY", "demo"))
    sim.add_argument("--gateway-id", default=os.environ.get("VIGIL_GATEWAY_GATEWAY_ID", "sim-gw"))
    sim.add_argument("--mqtt-url", default=os.environ.get("VIGIL_GATEWAY_MQTT_URL", "mqtt://127.0.0.1:1883"))
    sim.add_argument("--queue-path", type=Path, default=None, help="gateway queue (default: a temporary file)")
    sim.add_argument("--state-dir", type=Path, default=None,
                     help="each wearable's configuration file (its flash): sequence numbers continue across runs "
                          "(default: .vigil/sim/<agency>)")
    sim.add_argument("--log-level", default="INFO")
    sim.set_defaults(func=_cmd_simulate)


def demo_key(device_id: int, secret: str = "vigil-demo") -> bytes:
    """Deterministic development keys for simulated devices: never for real devices."""
    return hashlib.sha256(f"{secret}/{device_id}".encode()).digest()


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("bleak.backends.bluezdbus.version").setLevel(logging.ERROR)


def _install_stop(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)  # handlers only set the event


def _cmd_gateway_run(args) -> int:
    from gateway.bridge import Gateway
    from gateway.config import GatewaySettings
    from gateway.exceptions import ConfigError, GatewayIdInUse

    _setup_logging(args.log_level)
    try:
        settings = GatewaySettings.load(args.config)
    except ConfigError as exc:
        print(f"vigil gateway run: {exc}", file=sys.stderr)
        return 2

    async def main() -> None:
        stop = asyncio.Event()
        _install_stop(stop)
        await Gateway(settings).run(stop)

    try:
        asyncio.run(main())
    except GatewayIdInUse as exc:
        print(f"vigil gateway run: {exc}", file=sys.stderr)
        return 2
    return 0


def _load_keys(args) -> dict[int, bytes]:
    if args.keys:
        raw = json.loads(args.keys.read_text())
        keys = {int(k, 0): bytes.fromhex(v) for k, v in raw.items()}
        return dict(list(keys.items())[: args.officers])
    log.warning("using deterministic demo keys (development only)")
    return {args.first_device_id + i: demo_key(args.first_device_id + i) for i in range(args.officers)}


def _cmd_simulate(args) -> int:
    from gateway.exceptions import GatewayIdInUse
    from gateway.sim import scenarios

    _setup_logging(args.log_level)
    keys = _load_keys(args)
    names = (scenarios.shift_assignment(len(keys)) if args.scenario == "shift"
             else [scenarios.get(args.scenario).name] * len(keys))
    for (device_id, _), name in zip(keys.items(), names):
        print(f"VG-{device_id:08X}  device_id={device_id}  scenario={name}")
    try:
        asyncio.run(_simulate(args, keys, names))
    except GatewayIdInUse as exc:
        print(f"vigil simulate: {exc}", file=sys.stderr)
        return 2
    return 0


async def _simulate(args, keys: dict[int, bytes], names: list[str]) -> None:
    import tempfile

    from gateway.bridge import Gateway
    from gateway.config import GatewaySettings
    from gateway.sim.direct import DirectFleet
    from gateway.sim.fleet import SimulatedFleet

    stop = asyncio.Event()
    _install_stop(stop)
    if args.duration:
        asyncio.get_running_loop().call_later(args.duration, stop.set)
    state_dir = args.state_dir or Path(".vigil") / "sim" / args.agency
    options = dict(scenarios=names, speed=args.speed, seed=args.seed, state_dir=state_dir)
    if args.via == "mqtt":
        async with DirectFleet(keys, args.mqtt_url, args.agency, gateway_id=args.gateway_id, **options) as fleet:
            await stop.wait()
            sent = sum(len(w.sent) for w in fleet.wearables.values())
        print(f"published {sent} frames for {len(keys)} officers ({fleet.connects} MQTT connection(s))")
        return
    with tempfile.TemporaryDirectory(prefix="vigil-sim-") as tmp:
        settings = GatewaySettings(agency=args.agency, gateway_id=args.gateway_id, mqtt_url=args.mqtt_url,
                                   devices=list(keys), queue_path=args.queue_path or Path(tmp) / "queue.sqlite3")
        async with SimulatedFleet(keys, **options) as fleet:
            await Gateway(settings).run(stop)
            sent = sum(len(w.sent) for w in fleet.wearables.values())
    print(f"{sent} frames went over the virtual radio for {len(keys)} officers")
