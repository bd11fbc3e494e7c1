"""Commands to a wearable: "help is coming" when a supervisor acknowledges its incident,
EVENT_ACK once an event's alert is stored (the device stops resending it), TIME_SYNC when a
device's clock is unsynced or off by more than a second (at most once per device per
TIME_SYNC_INTERVAL_S), and messages felt as haptic patterns (COMMAND_MESSAGE): a supervisor's,
or "colleague needs help" to officers near a colleague's SOS or man-down (nearby.py), each
followed from sent to delivered to confirmed (messages.py).

The command frame is sealed with the device's own keys (the gateway cannot forge one) and a
per-device sequence number that only grows, across restarts: numbers are reserved from the
database in blocks, so a command can still be sealed while the database is briefly away. It is
published (QoS 1) to the downlink topic of the gateway that last forwarded the device's frames
(the status board knows it); the gateway's JSON result is recorded on the incident."""
from __future__ import annotations

import asyncio
import collections
import datetime as dt
import json
import logging
import time
import uuid
from dataclasses import dataclass
import aiomqtt
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.db import schema as t
from backend.app.config import BackendSettings
from backend.detection.status import StatusBoard
from backend.ingest.mqtt import client_for, reconnect_delay
from backend.ingest.registry import DeviceRegistry
from backend.app.waiting import wait_for_any
from firmware import frame as F
from backend.incidents import events as ev
from backend.incidents import messages as msg
from backend.incidents.model import Alert
from backend.incidents.nearby import GatewayPositions, NearbyColleagues
from gateway import topics

log = logging.getLogger("vigil.downlink")

# Sequence numbers reserved per database round trip; a restart skips at most this many.
SEQ_BLOCK = 64
_STORAGE_ERRORS = (sa.exc.SQLAlchemyError, OSError, asyncio.TimeoutError)
# Haptic pattern number carried in the command's argument byte.
HELP_PATTERN = 1
# A device clock further than this from the backend's, as its status frames show, is resynced.
CLOCK_DRIFT_MS = 1000
# At most one time sync per device this often: a link that delays frames cannot cause a storm.
TIME_SYNC_INTERVAL_S = 30.0
# An EVENT_ACK the gateway could not write (link down) is sent again, this many times at most;
# the device resends the event meanwhile, and the backend refuses those copies as replays.
ACK_ATTEMPTS = 20
# A message the gateway could not write (the device out of its reach for the gateway's downlink
# TTL, or served by another gateway now) is sealed again and sent to the device's latest
# gateway, this many times in all; then it stands as not delivered, with the gateway's reason.
MESSAGE_ATTEMPTS = 3


@dataclass(slots=True)
class Command:
    alert_id: uuid.UUID | None  # the incident a help command belongs to; None for acks and syncs
    agency_id: str
    device_id: int
    gateway: str | None
    code: int
    seq: int | None = None
    payload: bytes | None = None
    sent_at: dt.datetime | None = None
    arg: int = 0
    word: int = 0
    attempts: int = 0
    message: msg.OfficerMessage | None = None  # COMMAND_MESSAGE: the message it carries


class DownlinkService:
    def __init__(self, settings: BackendSettings, engine: AsyncEngine, registry: DeviceRegistry, status: StatusBoard,
                 events: ev.IncidentEvents, record: ev.RecordStep, *, wall_clock=time.time, monotonic=time.monotonic):
        self._settings = settings
        self._wall_clock = wall_clock
        self._monotonic = monotonic
        self._last_sync: dict[int, float] = {}  # device -> monotonic time of its last time sync
        self._engine = engine
        self._registry = registry
        self._record = record  # a step of the incident: help sent, its result
        self._status = status  # where each device was last heard
        self._reserved: dict[int, list[int]] = {}  # device -> [next, last reserved]
        self._queue: collections.deque[Command] = collections.deque()
        self._records: collections.deque[tuple[str, dict]] = collections.deque()
        self._sent: dict[tuple[int, int], Command] = {}
        self._wake = asyncio.Event()
        self._flush_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task] = set()
        self.results: dict[tuple[int, int], dict] = {}
        self.connected = asyncio.Event()
        self.messages = msg.MessageBook(engine)
        self.positions = GatewayPositions()  # from the gateways' retained state messages
        self._steps: collections.deque[tuple[uuid.UUID, str, str, str]] = collections.deque()
        events.subscribe(self._on_incident)
        self.nearby = NearbyColleagues(settings, registry, status, self.positions, self.send_message, self.note_step,
                                       events, wall_clock=wall_clock)

    # ---- incident events ----------------------------------------------------------------------

    def _on_incident(self, event: ev.IncidentEvent) -> None:
        if event.change == ev.RAISED:
            self.prepare(event.incident.device_id)  # reserve command seqs now, while the database answers
        elif event.change == ev.ACKNOWLEDGED:
            self.help_coming(event.incident)

    def prepare(self, device_id: int) -> None:
        """Reserve sequence numbers for this device in the background (an incident just began)."""
        if device_id in self._reserved:
            return
        task = asyncio.get_running_loop().create_task(self._reserve_quietly(device_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def help_coming(self, incident: Alert) -> None:
        gateway = self._status.last_gateway(incident.device_id) or incident.explanation.get("gateway")
        self._queue.append(Command(incident.id, incident.agency_id, incident.device_id, gateway, F.COMMAND_HELP_COMING))
        self._wake.set()

    def ack_event(self, agency_id: str, device_id: int, seq: int, gateway: str | None = None) -> None:
        """The event frame ``seq`` of a device is handled and its alert stored: tell the device,
        which keeps resending an event until it hears this (COMMAND_EVENT_ACK, low 16 bits)."""
        gateway = gateway or self._status.last_gateway(device_id)
        self._queue.append(Command(None, agency_id, device_id, gateway, F.COMMAND_EVENT_ACK, word=seq & 0xFFFF))
        self._wake.set()

    def observe_clock(self, agency_id: str, device_id: int, gateway: str, header: F.Header) -> bool:
        """Called for every verified frame: queue a TIME_SYNC when the device says its clock is
        unsynced, or when a frame sealed just before sending (status, live telemetry) carries
        a time more than CLOCK_DRIFT_MS from now, at most once per TIME_SYNC_INTERVAL_S per
        device. Returns True when a sync was queued."""
        if header.flags & F.FLAG_CLOCK_UNSYNCED:
            pass
        elif header.frame_type != F.TYPE_STATUS or header.flags & F.FLAG_BACKFILL:
            # Only a status frame says how far the clock is off: it is sealed just before it is
            # sent and comes on the events lane, which never waits behind telemetry. An event is
            # sealed when it happened; a telemetry block waits in the broker whenever ingest is
            # behind, and judging by it sent every device a TIME_SYNC each 30 s under load
            # (`vigil bench ingest`, 2,000 devices).
            return False
        else:
            drift = header.time_ms - self._wall_clock() * 1000
            if -CLOCK_DRIFT_MS <= drift <= CLOCK_DRIFT_MS:
                return False
        now = self._monotonic()
        last = self._last_sync.get(device_id)
        if last is not None and now - last < TIME_SYNC_INTERVAL_S:
            return False
        self._last_sync[device_id] = now
        self._queue.append(Command(None, agency_id, device_id, gateway, F.COMMAND_TIME_SYNC))
        self._wake.set()
        return True

    def send_message(self, agency_id: str, officer_id: int, officer_name: str | None, device_id: int, kind: str,
                     sent_by: str, alert_id: uuid.UUID | None = None, distance_m: float | None = None) -> msg.OfficerMessage:
        """Queue a message to the officer's wearable (kind: messages.MESSAGE_KINDS); returns it,
        its progress kept in ``messages``."""
        code = msg.MESSAGE_KINDS[kind]  # KeyError for a kind the frame format does not know
        message = self.messages.add(msg.OfficerMessage(
            id=uuid.uuid4(), agency_id=agency_id, officer_id=officer_id, officer_name=officer_name,
            device_id=device_id, kind=kind, sent_by=sent_by, created_at=dt.datetime.now(dt.timezone.utc),
            alert_id=alert_id, distance_m=distance_m))
        self._queue.append(Command(None, agency_id, device_id, self._status.last_gateway(device_id), F.COMMAND_MESSAGE,
                                   arg=code, message=message))
        if alert_id is not None and kind != msg.COLLEAGUE_KIND:
            self.note_step(alert_id, msg.STEP_MESSAGE_SENT, sent_by, f"{kind} to {officer_name or officer_id}")
        self._wake.set()
        return message

    def message_confirmed(self, device_id: int, word: int) -> msg.OfficerMessage | None:
        """The device's EVENT_MESSAGE_CONFIRMED (detail = the message's word): the officer pressed.
        A message sent before a restart is looked up in the database in the background."""
        at = dt.datetime.now(dt.timezone.utc)
        message = self.messages.confirmed(device_id, word, at)
        if message is None:
            task = asyncio.get_running_loop().create_task(self._confirmed_stored(device_id, word, at))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return None
        self._note_confirmed(message, device_id)
        return message

    async def _confirmed_stored(self, device_id: int, word: int, at: dt.datetime) -> None:
        try:
            message = await self.messages.confirmed_stored(device_id, word, at)
        except _STORAGE_ERRORS as exc:
            log.warning("device %d confirmed message %d; not looked up (%s)", device_id, word, exc.__class__.__name__)
            return
        except Exception:  # a background task's failure is logged, never lost
            log.exception("device %d confirmed message %d; the lookup failed", device_id, word)
            return
        if message is not None:
            self._note_confirmed(message, device_id)

    def _note_confirmed(self, message: msg.OfficerMessage, device_id: int) -> None:
        log.info("message %s (%s) confirmed by officer %s", message.id, message.kind, message.officer_id)
        if message.alert_id is not None:
            step = msg.STEP_COLLEAGUE_CONFIRMED if message.kind == msg.COLLEAGUE_KIND else msg.STEP_MESSAGE_CONFIRMED
            self.note_step(message.alert_id, step, f"device:{device_id}", f"{message.kind}: {message.officer_name or message.officer_id}")
        self._wake.set()  # written behind by the sender's loop

    def note_step(self, alert_id: uuid.UUID, step: str, actor: str, note: str) -> None:
        """A step for an incident's timeline, recorded by the sender's loop (callers only queue)."""
        self._steps.append((alert_id, step, actor, note))
        self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._queue)

    # ---- sequence numbers ----------------------------------------------------------------------

    async def _reserve_quietly(self, device_id: int) -> None:
        try:
            await self._reserve(device_id)
        except _STORAGE_ERRORS:
            pass  # reserved when the command is sealed

    async def _reserve(self, device_id: int) -> None:
        stmt = pg_insert(t.command_seq).values(device_id=device_id, reserved_through=SEQ_BLOCK)
        stmt = stmt.on_conflict_do_update(
            index_elements=["device_id"], set_={"reserved_through": t.command_seq.c.reserved_through + SEQ_BLOCK}
        ).returning(t.command_seq.c.reserved_through)
        async with self._engine.begin() as conn:
            through = (await conn.execute(stmt)).scalar_one()
        self._reserved[device_id] = [through - SEQ_BLOCK + 1, through]

    async def next_seq(self, device_id: int) -> int:
        block = self._reserved.get(device_id)
        if block is None or block[0] > block[1]:
            await self._reserve(device_id)
            block = self._reserved[device_id]
        seq = block[0]
        block[0] += 1
        return seq

    # ---- sending -------------------------------------------------------------------------------

    async def _seal(self, cmd: Command) -> bool:
        """Fill in seq and frame; False when it cannot be sent (recorded on the incident)."""
        device = self._registry.get(cmd.device_id)
        if device is None:
            await self._note(cmd, "device unknown: no key to seal the command")
            return False
        if cmd.gateway is None:
            cmd.gateway = await self._status.gateway_for(cmd.device_id)
            if cmd.gateway is None:
                await self._note(cmd, "no gateway has forwarded this device")
                return False
        if cmd.seq is None:
            cmd.seq = await self.next_seq(cmd.device_id)
            arg = HELP_PATTERN if cmd.code == F.COMMAND_HELP_COMING else cmd.arg
            if cmd.code == F.COMMAND_MESSAGE:
                cmd.word = cmd.seq & 0xFFFF  # the message id the device echoes when the officer confirms
            body = F.encode_command(cmd.code, arg, cmd.word)
            # sealed now, just before it goes out: a time sync's time is this moment
            cmd.payload = F.seal(device.keys, F.TYPE_COMMAND, cmd.device_id, cmd.seq, int(self._wall_clock() * 1000), body)
        return True

    async def _note(self, cmd: Command, why: str) -> None:
        if cmd.message is not None:
            self.messages.failed(cmd.message, why, dt.datetime.now(dt.timezone.utc))
        if cmd.alert_id is not None:
            await self._record(cmd.alert_id, "help_result", "system", why)
        else:
            log.warning("%s for device %d not sent: %s", F.COMMAND_NAMES[cmd.code], cmd.device_id, why)

    async def _publish_queued(self, client: aiomqtt.Client, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self._record_steps()
            if not self._queue:
                self._wake.clear()
                await wait_for_any(stop, self._wake, timeout=self._settings.db_retry_interval_s)
                await self._flush_records()
                continue
            cmd = self._queue[0]
            try:
                sendable = await self._seal(cmd)
            except _STORAGE_ERRORS:
                await wait_for_any(stop, timeout=self._settings.db_retry_interval_s)  # no seq yet: the database is away
                continue
            if sendable:
                topic = topics.downlink(cmd.agency_id, cmd.gateway, cmd.device_id)
                await client.publish(topic, cmd.payload, qos=1)
                cmd.sent_at = dt.datetime.now(dt.timezone.utc)
                self._sent[(cmd.device_id, cmd.seq)] = cmd
                log.info("%s: command %d to device %d via gateway %s", F.COMMAND_NAMES[cmd.code], cmd.seq, cmd.device_id,
                         cmd.gateway)
                self._records.append(("sent", dict(device_id=cmd.device_id, seq=cmd.seq, command=F.COMMAND_NAMES[cmd.code],
                                                   alert_id=cmd.alert_id, gateway_id=cmd.gateway, sent_at=cmd.sent_at)))
                if cmd.message is not None:
                    self.messages.sent(cmd.message, cmd.gateway, cmd.seq, cmd.sent_at)
                if cmd.alert_id is not None:
                    await self._record(cmd.alert_id, "help_sent", "system", f"gateway {cmd.gateway}, command seq {cmd.seq}")
            self._queue.popleft()
            await self._flush_records()

    async def _record_steps(self) -> None:
        while self._steps:
            alert_id, step, actor, note = self._steps.popleft()
            try:
                await self._record(alert_id, step, actor, note)
            except Exception:  # a step that cannot be recorded must not stop the commands
                log.exception("incident %s: step %s not recorded", alert_id, step)

    async def _read_results(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            try:
                where = topics.parse(str(message.topic))
                if where.direction == "state":  # a gateway's retained state: its position, if it states one
                    self.positions.state_message(where.agency, where.gateway, bytes(message.payload), self._wall_clock())
                    continue
                result = json.loads(bytes(message.payload))
                key = (int(result["device_id"]), int(result["command_seq"]))
            except (topics.TopicError, ValueError, KeyError, TypeError):
                log.warning("malformed downlink result on %s", message.topic)
                continue
            if where.direction != "result":
                continue
            self.results[key] = result
            cmd = self._sent.pop(key, None)
            if cmd is None:
                continue
            if cmd.message is not None:
                at = dt.datetime.now(dt.timezone.utc)
                if result.get("ok"):
                    self.messages.delivered(cmd.message, at)
                elif cmd.attempts + 1 < MESSAGE_ATTEMPTS and cmd.message.confirmed_at is None:
                    self.messages.retrying(cmd.message, f"attempt {cmd.attempts + 1} not delivered ({result.get('error')}); sending again")
                    self._queue.append(Command(None, cmd.agency_id, cmd.device_id, self._status.last_gateway(cmd.device_id),
                                               cmd.code, arg=cmd.arg, message=cmd.message, attempts=cmd.attempts + 1))
                    self._wake.set()
                else:
                    self.messages.failed(cmd.message, f"not delivered: {result.get('error')}", at)
            note = "written to the device" if result.get("ok") else f"not delivered: {result.get('error')}"
            self._records.append(("result", dict(device_id=key[0], seq=key[1], result_ok=bool(result.get("ok")),
                                                 result_error=result.get("error"), result_at=dt.datetime.now(dt.timezone.utc))))
            if cmd.alert_id is not None:
                await self._record(cmd.alert_id, "help_result", f"gateway:{where.gateway}", note)
            elif (cmd.code == F.COMMAND_EVENT_ACK and not result.get("ok") and result.get("error") != "not_provisioned"
                  and cmd.attempts + 1 < ACK_ATTEMPTS):
                # not written (link down): the device still holds the event; ack again, freshly sealed
                self._queue.append(Command(None, cmd.agency_id, cmd.device_id, None, cmd.code, word=cmd.word,
                                           attempts=cmd.attempts + 1))
                self._wake.set()
            elif cmd.code == F.COMMAND_TIME_SYNC and not result.get("ok"):
                self._last_sync.pop(cmd.device_id, None)  # the next frame may ask again
            await self._flush_records()

    async def _flush_records(self) -> None:
        # sender and result reader both flush: one at a time, or both write and pop the same head
        async with self._flush_lock:
            await self._flush_records_locked()

    async def _flush_records_locked(self) -> None:
        try:
            await self.messages.flush()
        except _STORAGE_ERRORS:
            pass  # kept; written on a later pass
        try:
            while self._records:
                what, values = self._records[0]
                async with self._engine.begin() as conn:
                    if what == "sent":
                        await conn.execute(pg_insert(t.downlink_commands).values(**values).on_conflict_do_nothing())
                    else:
                        await conn.execute(sa.update(t.downlink_commands).where(
                            t.downlink_commands.c.device_id == values["device_id"], t.downlink_commands.c.seq == values["seq"],
                        ).values(result_ok=values["result_ok"], result_error=values["result_error"], result_at=values["result_at"]))
                self._records.popleft()
        except _STORAGE_ERRORS:
            pass  # kept; written on a later pass

    async def run(self, stop: asyncio.Event) -> None:
        attempt = 0
        identifier = self._settings.mqtt_client_id + "-downlink"
        while not stop.is_set():
            try:
                async with client_for(self._settings.mqtt_url, identifier, ca_file=self._settings.mqtt_ca_file) as client:
                    for agency in self._settings.agencies:
                        await client.subscribe(f"{topics.ROOT}/{agency}/gw/+/result/+", qos=1)
                        await client.subscribe(f"{topics.ROOT}/{agency}/gw/+/state", qos=1)  # retained: positions
                    self.connected.set()
                    attempt = 0
                    async with asyncio.TaskGroup() as tg:
                        reader = tg.create_task(self._read_results(client), name="downlink-results")
                        await self._publish_queued(client, stop)
                        reader.cancel()
            except* aiomqtt.MqttError as group:
                self.connected.clear()
                log.error("downlink broker connection lost (%s); reconnecting", group.exceptions[0])
                await wait_for_any(stop, timeout=reconnect_delay(attempt))
                attempt += 1

