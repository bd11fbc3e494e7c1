"""`vigil simulate --via mqtt`: firmware wearables straight to the broker. The connection comes
back after the broker restarts (the firmware buffers meanwhile and backfills), sequence numbers
continue across a restart of the simulator (the device's flash reservation, in its state
directory), and a second simulator with the same gateway id is refused."""
from __future__ import annotations

import asyncio

import pytest

from firmware import frame
from gateway.exceptions import GatewayIdInUse
from gateway.sim.direct import DirectFleet

from tests.gateway.conftest import UplinkRecorder, fleet_keys, wait_until

DEVICE = 0x00D30001


async def test_direct_fleet_reconnects_after_a_broker_restart_and_backfills(private_mosquitto, agency, tmp_path):
    keys = fleet_keys([DEVICE])
    url = private_mosquitto.url
    broker = (private_mosquitto.host, private_mosquitto.port)
    async with DirectFleet(keys, url, agency, gateway_id="sim1", speed=5, device="firmware",
                           state_dir=tmp_path) as fleet:
        wearable = fleet.wearables[DEVICE]
        async with UplinkRecorder(*broker, agency) as recorder:
            await wait_until(lambda: len(recorder.seqs(DEVICE, "telemetry")) >= 5, 20, what="telemetry")
        await asyncio.to_thread(private_mosquitto.stop)
        await wait_until(lambda: not fleet.connected.is_set(), 10, what="the loss noticed")
        await wait_until(lambda: len(wearable.firmware.core.ring) >= 10, 20, what="frames buffered on the device")
        await asyncio.to_thread(private_mosquitto.start)
        async with UplinkRecorder(*broker, agency) as recorder:
            await wait_until(fleet.connected.is_set, 20, what="reconnected")
            await wait_until(lambda: len(wearable.firmware.core.ring) == 0, 20, what="the backlog sent")
            await wait_until(lambda: any(frame.parse_header(p).flags & frame.FLAG_BACKFILL
                                         for d, k, s, p, _ in recorder.frames if d == DEVICE), 10, what="backfill")
        assert fleet.connects == 2
        first_run_seq = wearable.next_seq

    # a restart of the simulator: numbering continues above everything the device reserved
    async with DirectFleet(keys, url, agency, gateway_id="sim1", speed=5, device="firmware",
                           state_dir=tmp_path) as fleet:
        async with UplinkRecorder(*broker, agency) as recorder:
            await wait_until(lambda: recorder.seqs(DEVICE), 20, what="frames after the restart")
            assert min(recorder.seqs(DEVICE)) > first_run_seq
        # a second simulator with the same gateway id is refused, and the first keeps its link
        with pytest.raises(GatewayIdInUse, match="sim1"):
            async with DirectFleet(fleet_keys([DEVICE + 1]), url, agency, gateway_id="sim1", device="firmware",
                                   state_dir=tmp_path):
                pass
        await asyncio.sleep(0.5)
        assert fleet.connected.is_set() and fleet.connects == 1
