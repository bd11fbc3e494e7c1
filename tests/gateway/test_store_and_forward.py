"""Nothing lost while the broker is away or the gateway is killed: the durable queue."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiomqtt
import httpx

from backend.local.infra import free_port
from gateway.sim.fleet import SimulatedFleet

from tests.gateway.conftest import UplinkRecorder, assert_device_lost_nothing, fleet_keys, running_gateway, wait_until

REPO = Path(__file__).resolve().parents[2]
BROKER_OUTAGE_S = 30.0  # the issue asks for 30 s


def _assert_complete_and_ordered(recorder, wearables):
    for w in wearables:
        assert_device_lost_nothing(recorder, w)
        for kind in ("telemetry", "event", "status"):
            order = recorder.first_occurrence_order(w.device_id, kind)
            assert order == sorted(order), f"{w.name}: {kind} out of order"


async def test_broker_down_30s_zero_lost_order_kept(private_mosquitto, agency, gateway_settings):
    ids = [0x00E00001, 0x00E00002, 0x00E00003]
    broker = (private_mosquitto.host, private_mosquitto.port)
    async with UplinkRecorder(*broker, agency) as recorder, \
            SimulatedFleet(fleet_keys(ids), device="firmware", scenarios=["patrol", "sos", "man_down"], speed=2) as fleet, \
            running_gateway(gateway_settings(ids, broker=broker)) as gateway:
        wearables = list(fleet.wearables.values())
        await wait_until(lambda: all(recorder.seqs(d) for d in ids), 20, what="frames before the outage")
        await asyncio.to_thread(private_mosquitto.stop)
        down_at = time.monotonic()
        await wait_until(lambda: gateway.store.depth >= 30, 20, what="frames queued on disk")
        await wait_until(lambda: time.monotonic() - down_at >= BROKER_OUTAGE_S, BROKER_OUTAGE_S + 5,
                         poll_s=0.5, what="the outage")
        queued = gateway.store.depth
        await asyncio.to_thread(private_mosquitto.start)
        for w in wearables:
            w.finish()
        await wait_until(lambda: all(w.drained() for w in wearables), 20, what="wearables drained")
        await wait_until(lambda: all(set(recorder.seqs(w.device_id)) >= set(w.produced) for w in wearables),
                         30, what="the backlog delivered")
    assert queued >= 30 * 3 * 2.5 * 2 * 0.8  # 30 s at 2x speed, three devices
    _assert_complete_and_ordered(recorder, wearables)


def _gateway_process(env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "backend.cli", "gateway", "run", "--log-level", "WARNING"],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


async def _metric(client: httpx.AsyncClient, url: str, name: str) -> float:
    try:
        text = (await client.get(url)).text
    except httpx.HTTPError:
        return -1.0
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") or line.startswith(name + " "))


async def test_gateway_sigkilled_with_queued_frames_loses_nothing(private_mosquitto, agency, tmp_path):
    ids = [0x00E10001, 0x00E10002, 0x00E10003]
    broker = (private_mosquitto.host, private_mosquitto.port)
    port = free_port()
    metrics_url = f"http://127.0.0.1:{port}/metrics"
    async with UplinkRecorder(*broker, agency) as recorder, \
            SimulatedFleet(fleet_keys(ids), device="firmware", scenarios=["patrol", "sos", "pursuit"], speed=5) as fleet:
        env = {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": fleet.bluez.bus_address,
               "VIGIL_GATEWAY_AGENCY": agency, "VIGIL_GATEWAY_GATEWAY_ID": "gw-kill",
               "VIGIL_GATEWAY_MQTT_URL": f"mqtt://{broker[0]}:{broker[1]}",
               "VIGIL_GATEWAY_DEVICES": ",".join(map(str, ids)),
               "VIGIL_GATEWAY_QUEUE_PATH": str(tmp_path / "queue.sqlite3"),
               "VIGIL_GATEWAY_METRICS_PORT": str(port)}
        wearables = list(fleet.wearables.values())
        first = _gateway_process(env)
        second = None
        try:
            async with httpx.AsyncClient(timeout=2) as http:
                await wait_until(lambda: all(recorder.seqs(d) for d in ids), 30, what="frames through process 1")
                await asyncio.to_thread(private_mosquitto.stop)
                depth = 0.0

                async def queued_enough():
                    nonlocal depth
                    depth = await _metric(http, metrics_url, "vigil_gateway_queue_depth")
                    return depth >= 40
                async with asyncio.timeout(30):
                    while not await queued_enough():
                        await asyncio.sleep(0.2)
                for w in wearables:
                    w.finish()
                await wait_until(lambda: all(w.drained() for w in wearables), 20, what="wearables drained")
                async with asyncio.timeout(20):  # every notification the devices sent is in the queue
                    while True:
                        # counted afresh each time: a drained wearable may still notify (a status frame,
                        # the last frames sent again on a new link), and a count taken once would never match
                        sent = sum(len(w.sent) for w in wearables)
                        fin = await _metric(http, metrics_url, "vigil_gateway_frames_in_total")
                        out = await _metric(http, metrics_url, "vigil_gateway_frames_out_total")
                        depth = await _metric(http, metrics_url, "vigil_gateway_queue_depth")
                        if fin == sent and depth + out >= fin:
                            break
                        await asyncio.sleep(0.1)
            first.send_signal(signal.SIGKILL)
            first.wait(10)
            assert depth > 0
            await asyncio.to_thread(private_mosquitto.start)
            second = _gateway_process(env)
            await wait_until(lambda: all(set(recorder.seqs(w.device_id)) >= set(w.produced) for w in wearables),
                             40, what="the queue of the killed gateway delivered")
        finally:
            for proc in (first, second):
                if proc is not None and proc.poll() is None:
                    proc.terminate()
                    try:
                        proc.wait(10)
                    except subprocess.TimeoutExpired:
                        proc.kill()
    _assert_complete_and_ordered(recorder, wearables)


async def test_gateway_state_retained_and_last_will_offline(mqtt_broker, agency, tmp_path):
    from gateway.sim.bluez import VirtualBlueZ

    state_topic = f"vigil/{agency}/gw/gw-will/state"
    async with UplinkRecorder(*mqtt_broker, agency) as recorder, VirtualBlueZ() as bluez:
        env = {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": bluez.bus_address, "VIGIL_GATEWAY_AGENCY": agency,
               "VIGIL_GATEWAY_GATEWAY_ID": "gw-will", "VIGIL_GATEWAY_MQTT_URL": f"mqtt://{mqtt_broker[0]}:{mqtt_broker[1]}",
               "VIGIL_GATEWAY_QUEUE_PATH": str(tmp_path / "q.sqlite3")}
        proc = _gateway_process(env)
        try:
            def states():
                # (a starting gateway first asks, with a "probe", whether its id is in use)
                return [s for s in (json.loads(p)["state"] for t, p in recorder.other if t == state_topic) if s != "probe"]
            await wait_until(lambda: states() == ["online"], 20, what="state online")
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            await wait_until(lambda: states() == ["online", "offline"], 20, what="the last will")
        finally:
            if proc.poll() is None:
                proc.kill()
    async with aiomqtt.Client(*mqtt_broker) as client:  # retained for whoever subscribes later
        await client.subscribe(state_topic, qos=1)
        async with asyncio.timeout(5):
            async for msg in client.messages:
                assert json.loads(msg.payload)["state"] == "offline" and msg.retain
                break
