"""Issue 15, item 5: the replay window outlives a restart. Frames acknowledged before the
restart are refused after it; a frame that was verified but never acknowledged (the broker
hands it back) is still taken."""
from __future__ import annotations

import asyncio

import pytest

from backend.app.server import serve
from backend.db import engine as db
from backend.ingest.registry import DeviceRegistry
from backend.ingest.replay_state import ReplayStateWriter, decode, encode
from firmware import frame as F
from tests.backend.conftest import backend_settings
from tests.backend.test_ingest import DEVICE, _seed
from tests.hardening.conftest import SealingDevice, publish

pytestmark = pytest.mark.integration


def test_a_window_survives_encoding():
    guard = F.ReplayGuard()
    for seq in (3, 5, 4100, 4101, 4099):
        guard.accept(seq)
    again = decode(*encode(guard))
    for seq in (4100, 4101, 4099):
        with pytest.raises(F.FrameError):
            again.check(seq)
    again.check(4098)  # never accepted, inside the window: still taken
    with pytest.raises(F.FrameError):
        again.check(3)  # older than the window


async def test_frames_replayed_after_a_graceful_restart_are_refused(database_url, mqtt_broker, agency):
    settings = backend_settings(database_url, *mqtt_broker, agency)
    key = await _seed(settings, agency)
    device = SealingDevice(DEVICE, key)
    frames = [(DEVICE, "telemetry", device.telemetry()) for _ in range(50)]
    async with serve(settings) as backend:
        rt = backend.runtime
        await asyncio.wait_for(rt.ingest.connected.wait(), 10)
        await publish(mqtt_broker, agency, frames)
        async with asyncio.timeout(15):
            while rt.metrics.accepted_count("telemetry") < 50:
                await asyncio.sleep(0.05)
    async with serve(settings) as backend:  # the same backend, started again
        rt = backend.runtime
        await asyncio.wait_for(rt.ingest.connected.wait(), 10)
        await publish(mqtt_broker, agency, frames)  # the same 50 frames, replayed
        await publish(mqtt_broker, agency, [(DEVICE, "telemetry", device.telemetry())])  # and one new frame
        async with asyncio.timeout(15):
            while rt.metrics.rejected_count("replayed") + rt.metrics.accepted_count("telemetry") < 51:
                await asyncio.sleep(0.05)
        assert rt.metrics.rejected_count("replayed") == 50
        assert rt.metrics.accepted_count("telemetry") == 1


async def test_a_frame_never_acknowledged_is_taken_after_a_restart(database_url, mqtt_broker, agency):
    settings = backend_settings(database_url, *mqtt_broker, agency)
    await _seed(settings, agency)
    engine = db.create_engine(settings)
    try:
        registry = DeviceRegistry(engine, settings.secret_key.get_secret_value())
        await registry.refresh()
        record = registry.get(DEVICE)
        for seq in (10, 11, 12):
            record.replay.accept(seq)  # verified ...

        class _Frame:
            def __init__(self, seq):
                self.device, self.header = record, F.Header(F.VERSION, F.TYPE_TELEMETRY, 0, DEVICE, seq, 0, 0)

        registry.acknowledged([_Frame(10), _Frame(11)])  # ... but the process died before acking 12
        assert await ReplayStateWriter(engine, registry).save() == 1

        restarted = DeviceRegistry(engine, settings.secret_key.get_secret_value())
        await restarted.refresh()
        guard = restarted.get(DEVICE).replay
        for seq in (10, 11):
            with pytest.raises(F.FrameError):
                guard.check(seq)
        guard.check(12)  # the broker's redelivery is taken
    finally:
        await engine.dispose()
