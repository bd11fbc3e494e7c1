"""Poison input: any exception while handling one uplink message is that message's alone. It is
refused with a reason, counted, kept in dead_letters and acknowledged, and ingest keeps paging.

The property test drives the backend's real ingest, alert lifecycle and detection in one process
(the database unreachable, so alert writes are kept for retry, as during an outage) with
authenticated frames whose header and payload hold arbitrary values."""
from __future__ import annotations

import asyncio
import os
import struct
import time

import aiomqtt
import pytest
import sqlalchemy as sa
import websockets
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from backend.app.config import BackendSettings
from backend.app.runtime import Runtime
from backend.app.server import serve
from backend.db import engine as db
from backend.db import schema as t
from backend.detection.service import DetectionService
from backend.ingest.registry import DeviceRecord
from backend.ingest.service import IngestService, device_time
from firmware import frame as F
from gateway import topics
from tests.backend.conftest import backend_settings, live_url, supervisor_token
from tests.backend.test_ingest import DEVICE, _next_alert, _seed, _sos

AGENCY = "poison"
HEALTHY, HOSTILE = 7001, 7002


class _Pipeline:
    """Ingest -> lifecycle -> live hub, and detection's bookkeeping, with nothing connected."""

    def __init__(self):
        s = BackendSettings(database_url="postgresql+asyncpg://vigil@127.0.0.1:1/none", mqtt_url="mqtt://127.0.0.1:1",
                            agencies=[AGENCY])
        self.runtime = rt = Runtime(s)

        async def sink(batch, data) -> None:
            return None

        detection = DetectionService(s, rt.engine, rt.registry, rt.alerts, rt.hub, rt.metrics, status=rt.status,
                                     store_copy=sink)
        self.ingest = IngestService(s, rt.registry, rt.alerts, rt.metrics, detection)
        self.keys = {}
        for device in (HEALTHY, HOSTILE):
            self.keys[device] = F.DeviceKeys(os.urandom(F.KEY_LEN))
            rt.registry.devices[device] = DeviceRecord(device, AGENCY, self.keys[device], "active", "upper_arm",
                                                       device, f"Officer {device}", None)
        self.sub, _ = rt.hub.subscribe(AGENCY)
        self.seq = {HEALTHY: 0, HOSTILE: 0}

    def frame(self, device: int, frame_type: int, payload: bytes, *, time_ms: int, flags: int) -> tuple:
        self.seq[device] += 1
        kind = F.TYPE_NAMES[frame_type]
        sealed = F.seal(self.keys[device], frame_type, device, self.seq[device], time_ms, payload, flags=flags)
        return topics.uplink(AGENCY, "gw1", device, kind), sealed, None

    def healthy_sos(self) -> tuple:
        return self.frame(HEALTHY, F.TYPE_EVENT, F.encode_event(F.EVENT_SOS, 0, 1), time_ms=int(time.time() * 1000),
                          flags=F.FLAG_ENCRYPTED)

    def paged(self) -> set[str]:
        out = set()
        while not self.sub.queue.empty():
            event = self.sub.queue.get_nowait()
            if event["type"] == "alert" and event["data"]["change"] == "raised":
                out.add(event["data"]["id"])
        return out


def test_device_time_outside_any_clock_is_unsynced_not_an_error():
    header = F.parse_header(F.seal(F.DeviceKeys(bytes(32)), F.TYPE_EVENT, 1, 1, 2 ** 62, F.encode_event(F.EVENT_SOS)))
    assert device_time(header) is None  # raised ValueError (year out of range) and killed ingest


@hsettings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(frame_type=st.sampled_from([F.TYPE_TELEMETRY, F.TYPE_EVENT, F.TYPE_STATUS]),
       time_ms=st.one_of(st.integers(0, 2 ** 64 - 1), st.just(2 ** 62), st.integers(0, 10 ** 9)),
       flags=st.sampled_from([0, F.FLAG_ENCRYPTED, F.FLAG_ENCRYPTED | F.FLAG_BACKFILL,
                              F.FLAG_ENCRYPTED | F.FLAG_CLOCK_UNSYNCED, F.FLAG_ENCRYPTED | F.FLAG_BACKFILL | F.FLAG_CLOCK_UNSYNCED]),
       payload=st.one_of(st.binary(max_size=F.MAX_PAYLOAD_LEN),
                         st.builds(lambda code, pr, detail: struct.pack(F.EVENT_FORMAT, code, pr, detail),
                                   st.one_of(st.sampled_from(sorted(F.EVENT_NAMES)), st.integers(0, 255)),
                                   st.integers(0, 3), st.integers(0, 65535)),
                         st.builds(lambda n, rate, v: bytes([rate, n, 0, 0]) + bytes([v % 256]) * (9 * n),
                                   st.integers(0, F.MAX_SAMPLES), st.integers(0, 255), st.integers(0, 255))))
def test_authenticated_frames_of_any_value_never_stop_paging(frame_type, time_ms, flags, payload):
    async def scenario():
        p = _Pipeline()
        hostile = p.frame(HOSTILE, frame_type, payload, time_ms=time_ms, flags=flags)
        sos = p.healthy_sos()
        frames = await p.ingest.handle_batch([hostile, sos])  # must not raise, whatever the hostile frame holds
        assert frames[1] is not None
        assert len(p.paged() & {str(a.id) for a in p.runtime.alerts.open_incidents(AGENCY) if a.device_id == HEALTHY}) == 1
        # and ingest still pages afterwards, in a batch of its own
        await p.ingest.handle_batch([p.frame(HOSTILE, frame_type, payload, time_ms=time_ms, flags=flags)])
        later = p.frame(HEALTHY, F.TYPE_EVENT, F.encode_event(F.EVENT_FALL_SUSPECTED, 0, 2), time_ms=int(time.time() * 1000),
                        flags=F.FLAG_ENCRYPTED)
        assert (await p.ingest.handle_batch([later]))[0] is not None

    asyncio.run(scenario())


async def test_message_whose_handling_raises_is_dead_lettered_acknowledged_and_ingest_goes_on(
        database_url, mqtt_broker, agency, monkeypatch):
    """A bug that raises while one device's frames are handled (injected into detection's
    bookkeeping) costs that frame only: refused, counted, kept in dead_letters, acknowledged
    (the broker does not hand it back after a restart), and the next SOS still pages."""
    settings = backend_settings(database_url, *mqtt_broker, agency)
    key = await _seed(settings, agency)
    host, port = mqtt_broker
    async with serve(settings) as backend:
        rt = backend.runtime
        await asyncio.wait_for(rt.ingest.connected.wait(), 10)
        real_on_frame = rt.detection.on_frame

        def on_frame(frame, received):
            if frame.header.seq == 1:
                raise RuntimeError("injected: a bug met by this frame only")
            return real_on_frame(frame, received)

        monkeypatch.setattr(rt.detection, "on_frame", on_frame)
        token = supervisor_token(settings, agency)
        async with websockets.connect(await live_url(backend.url, token)) as ws:
            async with aiomqtt.Client(host, port) as client:
                await client.publish(topics.uplink(agency, "gw1", DEVICE, "event"), _sos(key, 1), qos=1)
                await client.publish(topics.uplink(agency, "gw1", DEVICE, "event"), _sos(key, 2), qos=1)
            first = await _next_alert(ws)  # the poisoned frame's own alert was raised before the bug hit
            assert first["data"]["seq"] == 1
            await asyncio.wait_for(_until(lambda: rt.metrics.frames_poisoned.labels("handle")._value.get() == 1), 10)
            assert rt.metrics.accepted_count("event") == 2
        async with asyncio.timeout(10):
            while True:
                async with rt.engine.connect() as conn:
                    rows = (await conn.execute(sa.select(t.dead_letters))).mappings().all()
                if rows:
                    break
                await asyncio.sleep(0.05)
        assert len(rows) == 1 and rows[0]["stage"] == "handle" and "injected" in rows[0]["error"]
        assert F.parse_header(rows[0]["payload"]).seq == 1 and rows[0]["topic"].endswith("/event")
    # restarted: the broker does not hand the poisoned frame back (it was acknowledged)
    async with serve(settings) as backend:
        await asyncio.wait_for(backend.runtime.ingest.connected.wait(), 10)
        await asyncio.sleep(1.0)
        assert backend.runtime.metrics.rejected_count("replayed") == 0
        assert backend.runtime.metrics.accepted_count("event") == 0


async def _until(predicate) -> None:
    while not predicate():
        await asyncio.sleep(0.02)
