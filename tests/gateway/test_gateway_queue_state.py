"""A gateway says how many frames wait in its durable queue (its retained state, gateway/publisher.py),
and the backend's reader of gateway states (backend/identity/gateway_state.py) keeps what it said,
for the fleet page: a real gateway process started with a backlog says so, then says it drained."""
from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from backend.identity.gateway_state import GatewayStates
from gateway.store import FrameQueue, IncomingFrame
from tests.gateway.conftest import wait_until

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
BACKLOG = 30


async def test_a_gateway_backlog_is_stated_then_its_drain(mqtt_broker, agency, tmp_path):
    from gateway.sim.bluez import VirtualBlueZ

    queue = tmp_path / "q.sqlite3"
    with FrameQueue(queue, 1000) as store:  # frames a previous run could not send
        store.put_many([IncomingFrame("telemetry", 0x00C0FFEE, seq, b"\x00" * 40, time.time()) for seq in range(BACKLOG)])
    states = GatewayStates(f"mqtt://{mqtt_broker[0]}:{mqtt_broker[1]}", f"states-{agency}", [agency])
    said: list[int | None] = []
    seen = states.message

    def record(topic, payload):
        state = seen(topic, payload)
        if state is not None and topic.endswith("/gw-q/state"):
            said.append(state.queue_depth)
        return state
    states.message = record
    stop = asyncio.Event()
    reader = asyncio.create_task(states.run(stop))
    async with VirtualBlueZ() as bluez:
        env = {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": bluez.bus_address, "VIGIL_GATEWAY_AGENCY": agency,
               "VIGIL_GATEWAY_GATEWAY_ID": "gw-q", "VIGIL_GATEWAY_MQTT_URL": f"mqtt://{mqtt_broker[0]}:{mqtt_broker[1]}",
               "VIGIL_GATEWAY_QUEUE_PATH": str(queue), "VIGIL_GATEWAY_LINK_QUALITY_INTERVAL_S": "0.5"}
        proc = subprocess.Popen([sys.executable, "-m", "backend.cli", "gateway", "run", "--log-level", "WARNING"],
                                cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            await wait_until(lambda: BACKLOG in said, 20, what="the backlog stated on connect")
            await wait_until(lambda: said and said[-1] == 0, 20, what="the drained queue stated")
            now = states.get(agency, "gw-q")
            assert now.state == "online" and now.queue_depth == 0 and abs(now.at - time.time()) < 30
            assert states.get(agency, "gw-other") is None
        finally:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
            if proc.poll() is None:
                proc.kill()
            stop.set()
            reader.cancel()  # as the runtime's TaskGroup does at shutdown
            with contextlib.suppress(asyncio.CancelledError):
                await reader
