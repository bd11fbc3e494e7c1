"""Uplink ingest: every frame from MQTT is verified end to end, then acted on.

Verification order: topic layout, cleartext header, device known and active in the topic's
agency, tag with the device's key, sequence window against replay, payload, assignment.
Every refusal is counted by reason; nothing unverified reaches storage or alerts."""
from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import logging
import time
from collections import defaultdict
from dataclasses import dataclass

import aiomqtt
import numpy as np

from backend.incidents.rules import EVENT_ALERTS
from backend.incidents.alerts import AlertService
from backend.incidents.downlink import DownlinkService
from backend.app.config import BackendSettings
from backend.detection.service import DetectionService
from backend.exceptions import FrameRejected
from backend.app.metrics import BackendMetrics
from backend.ingest.clock import believable
from backend.ingest import fastpath
from backend.ingest.dead_letters import DeadLetters
from backend.ingest.mqtt import EVENTS_RECONNECT_CAP_S, RECONNECT_CAP_S, UplinkSubscriber, reconnect_delay
from backend.ingest.journal import TelemetryJournal
from backend.ingest.registry import DeviceRecord, DeviceRegistry
from firmware import frame as F
from gateway import topics

log = logging.getLogger("vigil.ingest")

_KIND_BY_TYPE = {F.TYPE_EVENT: "event", F.TYPE_TELEMETRY: "telemetry", F.TYPE_STATUS: "status"}


@dataclass(slots=True)
class VerifiedFrame:
    device: DeviceRecord
    gateway: str
    header: F.Header
    decoded: tuple  # firmware.frame's payload tuple; telemetry's samples as arrays (decode_telemetry_batch)
    location: dict | None


def device_time(header: F.Header) -> dt.datetime | None:
    """The time the device claims for a frame (an alert keeps it beside its receive time), or
    None when it is unsynced or no time any clock could show (backend/ingest/clock.py)."""
    if header.flags & F.FLAG_CLOCK_UNSYNCED or not believable(header.time_ms):
        return None
    return dt.datetime.fromtimestamp(header.time_ms / 1000, dt.timezone.utc)


# Each device publishes on the same few topics all shift: their parse is remembered (a topic
# that fails to parse raises again every time; 65,536 topics are about 20,000 devices' three).
_parse_topic = functools.lru_cache(maxsize=1 << 16)(topics.parse)


def is_recorded(guard: F.ReplayGuard, seq: int) -> bool:
    """Whether ``guard``'s window says ``seq`` was recorded (older than its window: unknown, False)."""
    highest, seen = guard.state()
    if seq > highest or highest - seq >= guard.window:
        return False
    return bool((seen >> (highest - seq)) & 1)


class FrameVerifier:
    """Verifies one read's messages. ``compiled``: the compiled path (backend/ingest/_fastpath.pyx)
    when True, the pure-Python reference when False, the compiled one when it is built when None."""

    def __init__(self, registry: DeviceRegistry, compiled: bool | None = None):
        self._registry = registry
        self._compiled = None
        if compiled or (compiled is None and fastpath.AVAILABLE):
            self._compiled = fastpath.module().CompiledVerifier(self, registry, _COMPILED_NAMES)

    @property
    def compiled(self) -> bool:
        return self._compiled is not None

    def verify(self, messages: list[tuple], replaying: bool = False) -> list[VerifiedFrame | FrameRejected | Poisoned]:
        """Messages (topic, payload, user properties, ...): each checked in the order above (its
        seq consumed when the tag is good), the telemetry payloads among them decoded together
        (:func:`decode_telemetry_batch`). Returns, in order, each message's verified frame or
        why it was refused. The compiled path and :meth:`verify_reference` give the same."""
        if self._compiled is not None:
            return self._compiled.verify(messages, replaying)
        return self.verify_reference(messages, replaying)

    def verify_reference(self, messages: list[tuple], replaying: bool = False) -> list[VerifiedFrame | FrameRejected | Poisoned]:
        """:meth:`verify` in pure Python: the definition the compiled path is tested against."""
        results: list = []
        telemetry: list[tuple[int, PendingTelemetry]] = []
        for message in messages:
            result = self.check_one(message, replaying)
            if isinstance(result, PendingTelemetry):
                telemetry.append((len(results), result))
                results.append(None)  # decoded below, with the rest of the batch's telemetry
            else:
                results.append(result)
        if telemetry:
            finish_telemetry(results, telemetry)
        return results

    def check_one(self, message: tuple, replaying: bool = False) -> VerifiedFrame | FrameRejected | Poisoned | PendingTelemetry:
        """One message's checks: its verified frame, its refusal, or, for telemetry, what is
        left for the batch's decode."""
        topic, payload, props, *_ = message
        try:
            device, gateway, header, body = self._open(topic, payload, replaying)
            decoded = None
            if header.frame_type != F.TYPE_TELEMETRY:
                try:
                    decoded = F.decode_payload(header.frame_type, body)
                except F.FrameError as exc:
                    raise FrameRejected(exc.reason, exc.detail) from exc
            if device.officer_id is None:
                raise FrameRejected("unassigned_device", str(header.device_id))
        except FrameRejected as exc:
            return exc
        except Exception as exc:  # a message that makes verification raise: refused alone
            return Poisoned(exc)
        if decoded is None:
            return PendingTelemetry(device, gateway, header, body)
        location = _location(props) if header.frame_type == F.TYPE_EVENT else None
        return VerifiedFrame(device, gateway, header, decoded, location)

    def acknowledged(self, frames: list) -> None:
        self._registry.acknowledged(frames)

    def _open(self, topic: str, payload: bytes, replaying: bool = False) -> tuple[DeviceRecord, str, F.Header, bytes]:
        """Raise FrameRejected, or return the frame's device, gateway, header and decrypted
        payload (its seq now consumed). ``replaying``: a frame from our own journal, accepted
        before a crash (its seq may be in the saved window already)."""
        try:
            where = _parse_topic(topic)
        except topics.TopicError as exc:
            raise FrameRejected("bad_topic", str(exc)) from exc
        if where.direction != "up":
            raise FrameRejected("bad_topic", topic)
        try:
            header = F.parse_header(payload)
        except F.FrameError as exc:
            raise FrameRejected(exc.reason, exc.detail) from exc
        if header.device_id != where.device_id or _KIND_BY_TYPE.get(header.frame_type) != where.kind:
            raise FrameRejected("topic_mismatch", f"{topic} carries a {header.type_name} frame of device {header.device_id}")
        device = self._registry.get(header.device_id)
        if device is None:
            raise FrameRejected("unknown_device", str(header.device_id))
        if device.agency_id != where.agency:
            raise FrameRejected("wrong_agency", f"device {header.device_id} belongs to {device.agency_id}, not {where.agency}")
        if device.status != "active":
            raise FrameRejected("retired_device", str(header.device_id))
        if device.gateways and where.gateway not in device.gateways:  # before the tag: burns no seq
            raise FrameRejected("gateway_not_serving", f"gateway {where.gateway} does not serve device {header.device_id}")
        try:
            if not replaying:
                device.replay.check(header.seq)
            header, body = F.open_frame(payload, device.keys)
            if not replaying:
                device.replay.accept(header.seq)
        except F.FrameError as exc:
            raise FrameRejected(exc.reason, exc.detail) from exc
        if replaying:
            with contextlib.suppress(F.FrameError):
                device.replay.accept(header.seq)
        return device, where.gateway, header, body


# One telemetry sample as it is packed after the 4-byte header: PPG uint24, then (later in the
# payload) x, y, z int16 milli-g; see firmware.frame.encode_telemetry.
_ACCEL = np.dtype("<i2")


def decode_telemetry_batch(payloads: list[bytes]) -> list[tuple[int, int, np.ndarray, np.ndarray] | F.FrameError]:
    """``firmware.frame.decode_telemetry`` of many payloads at once, one numpy pass per payload
    length: the same checks and values, as arrays (ppg (n,) int32 counts, accel (n, 3) int16
    milli-g, views of the batch's) instead of per-sample Python objects. Returns, in order, each
    payload's (rate_hz, led_current, ppg, accel) or the FrameError the codec raises for it; one
    payload is a batch of one."""
    out: list = [None] * len(payloads)
    by_len: dict[int, list[int]] = defaultdict(list)
    for i, p in enumerate(payloads):
        by_len[len(p)].append(i)
    h = F.TELEMETRY_HEADER_LEN
    for length, idx in by_len.items():
        if length < h:
            for i in idx:
                out[i] = F.FrameError("bad_payload", "telemetry payload of %d bytes" % length)
            continue
        raw = np.frombuffer(b"".join(payloads[i] for i in idx), np.uint8).reshape(len(idx), length)
        rates, counts, leds = raw[:, 0].tolist(), raw[:, 1].tolist(), raw[:, 2].tolist()
        n = (length - h) // F.TELEMETRY_SAMPLE_LEN
        if 0 < n <= F.MAX_SAMPLES and length == h + n * F.TELEMETRY_SAMPLE_LEN:
            # uint24 little-endian -> int32: each value's 3 bytes into a zeroed 4-byte cell, then one view
            cells = np.zeros((len(idx), n, 4), np.uint8)
            cells[:, :, :3] = raw[:, h:h + 3 * n].reshape(len(idx), n, 3)
            ppg = cells.view("<i4").reshape(len(idx), n)
            accel = np.ascontiguousarray(raw[:, h + 3 * n:]).view(_ACCEL).reshape(len(idx), n, 3)
        else:
            n = -1  # no sample count fits this length
        for k, i in enumerate(idx):
            if counts[k] == 0 or counts[k] > F.MAX_SAMPLES or rates[k] == 0:
                out[i] = F.FrameError("bad_payload", "%d samples at %d Hz" % (counts[k], rates[k]))
            elif counts[k] != n:
                out[i] = F.FrameError("bad_payload", "%d samples in %d bytes" % (counts[k], length))
            else:
                out[i] = (rates[k], leds[k], ppg[k], accel[k])
    return out


class Poisoned:
    """A message whose verification raised (not a refusal the checks foresaw): refused alone."""
    __slots__ = ("error",)

    def __init__(self, error: Exception):
        self.error = error


@dataclass(slots=True)
class PendingTelemetry:
    """A telemetry message whose checks passed, its payload decrypted, waiting for the batch's decode."""
    device: DeviceRecord
    gateway: str
    header: F.Header
    body: bytes


def finish_telemetry(results: list, pending: list[tuple[int, PendingTelemetry]]) -> None:
    """Decode the pending telemetry together (:func:`decode_telemetry_batch`) into
    ``results[index]``: the verified frame, or the payload's refusal."""
    for (i, p), decoded in zip(pending, _decode_contained([p.body for _, p in pending])):
        if isinstance(decoded, Exception) and not isinstance(decoded, F.FrameError):
            results[i] = Poisoned(decoded)
        elif isinstance(decoded, F.FrameError):
            results[i] = FrameRejected(decoded.reason, decoded.detail)
        else:
            results[i] = VerifiedFrame(p.device, p.gateway, p.header, decoded, None)


def _decode_contained(payloads: list[bytes]) -> list:
    """:func:`decode_telemetry_batch`, or, if that raises, each payload alone, so one payload
    that makes decoding raise is that payload's failure only."""
    try:
        return decode_telemetry_batch(payloads)
    except Exception:
        out = []
        for payload in payloads:
            try:
                out.extend(decode_telemetry_batch([payload]))
            except Exception as exc:
                out.append(exc)
        return out


def _location(props: dict[str, str] | None) -> dict | None:
    if not props or "lat" not in props or "lon" not in props:
        return None
    try:
        lat, lon = float(props["lat"]), float(props["lon"])
    except ValueError:
        return None
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        return None
    return {"lat": lat, "lon": lon, "source": props.get("loc_source", "gateway")}


class IngestService:
    def __init__(self, settings: BackendSettings, registry: DeviceRegistry, alerts: AlertService, metrics: BackendMetrics,
                 detection: DetectionService | None = None, dead_letters: DeadLetters | None = None,
                 downlink: DownlinkService | None = None, journal: TelemetryJournal | None = None):
        self._settings = settings
        self._journal = journal  # telemetry on disk before it is acknowledged
        self._downlink = downlink  # EVENT_ACK once an event's alert is stored; TIME_SYNC for unsynced clocks
        self._dead_letters = dead_letters  # messages whose handling raised
        self._verifier = FrameVerifier(registry)
        metrics.ingest_compiled.set(int(self._verifier.compiled))
        if not self._verifier.compiled:
            log.warning("ingest runs on the pure-Python reference path, several times the CPU per frame: %s",
                        fastpath.UNAVAILABLE)
        self._alerts = alerts
        self._metrics = metrics
        self.connected = asyncio.Event()  # both uplink connections are up
        self.disconnected_since: float | None = time.monotonic()  # monotonic time both were last up, or start
        self._links: dict[str, asyncio.Event] = {}
        self._reject_logged: set[str] = set()
        self._accepted = {kind: metrics.frames_accepted.labels(kind) for kind in _KIND_BY_TYPE.values()}  # label children looked up once
        # streaming detection (backend/detection): fed every verified frame
        self.detection = detection

    async def handle(self, topic: str, payload: bytes, props: dict[str, str] | None = None) -> VerifiedFrame | None:
        """One frame: the verified frame, or None when it was rejected (counted, logged)."""
        return (await self.handle_batch([(topic, payload, props)]))[0]

    async def handle_batch(self, messages: list[tuple], replaying: bool = False) -> list[VerifiedFrame | None]:
        """Messages (topic, payload, user properties, ...) as one MQTT read delivered them:
        each verified, the telemetry payloads decoded together, then acted on in order.
        Returns each message's verified frame, or None where it was rejected. ``replaying``:
        the messages come from the telemetry journal after a crash."""
        received = time.monotonic()
        frames: list[VerifiedFrame | None] = []
        for message, result in zip(messages, self._verifier.verify(messages, replaying)):
            if isinstance(result, FrameRejected):
                self._rejected(result, message[0])
                result = None
            elif isinstance(result, Poisoned):
                self._poisoned(message, "verify", result.error)
                result = None
            frames.append(result)
        accepted = dict.fromkeys(_KIND_BY_TYPE, 0)
        for frame in frames:
            if frame is not None:
                accepted[frame.header.frame_type] += 1
        for frame_type, n in accepted.items():  # counted before acting, like the refusals
            if n and not replaying:  # a replayed frame was counted before the restart
                self._accepted[_KIND_BY_TYPE[frame_type]].inc(n)
        for message, frame in zip(messages, frames):
            if frame is None:
                continue
            try:
                if self._downlink is not None:
                    self._downlink.observe_clock(frame.device.agency_id, frame.device.device_id, frame.gateway, frame.header)
                if frame.header.frame_type == F.TYPE_EVENT:
                    await self._on_event(frame, received)
                if self.detection is not None:  # bookkeeping only; the models run in their own loop
                    self.detection.on_frame(frame, received)
            except Exception as exc:  # one message's failure, whatever its cause, is that message's alone
                self._poisoned(message, "handle", exc)
        return frames

    async def recover_journal(self) -> tuple[int, int]:
        """Replay what the telemetry journal kept from before a crash, skipping the frames whose
        samples were stored; before subscribing. Returns (frames replayed, frames skipped).
        Raises a storage error while the database is away (the supervisor retries)."""
        if self._journal is None or not self._journal.leftover:
            return 0, 0
        stored = await self.detection.load_stored() if self.detection is not None else {}
        replayed = skipped = 0
        for batch in self._journal.replay():
            keep = []
            for message in batch:
                try:
                    header = F.parse_header(message[1])
                except F.FrameError:
                    keep.append(message)  # refused again, counted, as it would have been
                    continue
                guard = stored.get(header.device_id)
                if guard is not None and is_recorded(guard, header.seq):
                    skipped += 1
                else:
                    keep.append(message)
            if keep:
                await self.handle_batch(keep, replaying=True)
                replayed += len(keep)
        self._metrics.journal_replayed.inc(replayed)
        self._metrics.journal_skipped.inc(skipped)
        log.warning("telemetry journal: %d frame(s) kept from before the restart replayed, %d already stored skipped",
                    replayed, skipped)
        return replayed, skipped

    def _poisoned(self, message: tuple, stage: str, exc: Exception) -> None:
        if self._dead_letters is not None:
            self._dead_letters.add(message[0], message[1], stage, exc)
        else:
            self._metrics.frames_poisoned.labels(stage).inc()
            log.exception("uplink message on %s raised while %s; refused", message[0], stage)

    def _rejected(self, exc: FrameRejected, topic: str) -> None:
        self._metrics.frames_rejected.labels(exc.reason).inc()
        if exc.reason not in self._reject_logged:  # once per reason; the counter has the rest
            self._reject_logged.add(exc.reason)
            log.warning("frame rejected (%s) on %s: %s", exc.reason, topic, exc.detail)

    async def _on_event(self, frame: VerifiedFrame, received: float) -> None:
        code, priority_hint, detail = frame.decoded
        d = frame.device
        kind = EVENT_ALERTS.get(code)
        if kind is None:  # cancel, pre-alert, help confirmed: they act on the open incident
            if code == F.EVENT_MESSAGE_CONFIRMED and self._downlink is not None:
                self._downlink.message_confirmed(d.device_id, detail)  # the officer felt a message
            await self._alerts.device_event(device_id=d.device_id, officer_id=d.officer_id, seq=frame.header.seq, code=code)
            self._ack(frame)
            return
        await self._alerts.raise_alert(
            agency_id=d.agency_id, device_id=d.device_id, seq=frame.header.seq, kind=kind,
            officer_id=d.officer_id, officer_name=d.officer_name,
            explanation={"detector": "device", "event": F.EVENT_NAMES[code], "detail": detail,
                         "gateway": frame.gateway, "device_priority": priority_hint},
            device_time=device_time(frame.header), location=frame.location,
            received_monotonic=received,
        )
        self._ack(frame)

    def _ack(self, frame: VerifiedFrame) -> None:
        """The event is handled and stored: the device may stop resending it (EVENT_ACK)."""
        if self._downlink is not None:
            self._downlink.ack_event(frame.device.agency_id, frame.device.device_id, frame.header.seq, frame.gateway)

    async def run(self) -> None:
        """Consume uplink frames forever on two connections, reconnecting each with jittered
        backoff; cancel to stop.

        Events and status frames have a session of their own, so an SOS never waits in the
        broker's queue behind telemetry a busy backend has not read yet. Each device's frames
        stay in order within a kind; across kinds the replay window accepts any order (events
        overtake telemetry on the device's link too)."""
        await self.recover_journal()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._consume("events", ("event", "status")), name="ingest-events")
            tg.create_task(self._consume("telemetry", ("telemetry",)), name="ingest-telemetry")

    async def _consume(self, name: str, kinds: tuple[str, ...]) -> None:
        connected = self._links[name] = asyncio.Event()
        attempt = 0
        lost_logged = False
        identifier = self._settings.mqtt_client_id + ("" if name == "telemetry" else f"-{name}")
        while True:
            try:
                async with UplinkSubscriber(self._settings.mqtt_url, identifier, ca_file=self._settings.mqtt_ca_file) as uplink:
                    if name == "telemetry":  # this session once carried every kind: events now have their own
                        await uplink.unsubscribe([topics.uplink_filter(agency) for agency in self._settings.agencies])
                    await uplink.subscribe([topics.uplink_filter(agency, kind) for agency in self._settings.agencies
                                            for kind in kinds])
                    if lost_logged:
                        log.warning("broker connection recovered (%s)", name)
                    else:
                        log.info("ingest subscribed at %s for agencies %s (%s)", self._settings.mqtt_url,
                                 self._settings.agencies, name)
                    attempt, lost_logged = 0, False
                    connected.set()
                    if all(link.is_set() for link in self._links.values()) and len(self._links) == 2:
                        self.connected.set()
                        self.disconnected_since = None
                    async for batch in uplink.batches():
                        frames = await self.handle_batch(batch)
                        if name == "telemetry" and self._journal is not None:
                            # on disk before acknowledged (an event's alert is journaled in handle_batch)
                            await self._journal.append([m for m, f in zip(batch, frames) if f is not None])
                            self._journal.release(self.detection.raw.drained_at if self.detection else None)
                        uplink.ack(batch)  # QoS 1: acknowledged once handled and durable
                        self._verifier.acknowledged(frames)  # never handed back: refused after a restart
                        await asyncio.sleep(0)  # a full socket buffer must not starve the other tasks
            except aiomqtt.MqttError as exc:
                connected.clear()
                self.connected.clear()
                if self.disconnected_since is None:
                    self.disconnected_since = time.monotonic()
                if not lost_logged:
                    log.error("broker connection lost (%s, %s); reconnecting", name, exc)
                    lost_logged = True
                await asyncio.sleep(reconnect_delay(attempt, cap_s=EVENTS_RECONNECT_CAP_S if name == "events" else RECONNECT_CAP_S))
                attempt += 1


# what the compiled path builds and calls: the same objects as the reference's
_COMPILED_NAMES = {
    "parse_topic": _parse_topic, "kind_by_type": _KIND_BY_TYPE, "location": _location, "Header": F.Header,
    "decode_payload": F.decode_payload, "FrameError": F.FrameError, "FrameRejected": FrameRejected,
    "Poisoned": Poisoned, "VerifiedFrame": VerifiedFrame, "Pending": PendingTelemetry,
    "finish_telemetry": finish_telemetry,
}
