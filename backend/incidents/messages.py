"""Messages to an officer's wearable, felt as haptic patterns: the supervisor's small fixed set
and the backend's "colleague needs help" (backend/incidents/nearby.py).

A message goes out through the downlink (backend/incidents/downlink.py: COMMAND_MESSAGE, sealed
with the device's key, via the gateway that last heard the device); its word is the low 16 bits
of the command's sequence number, and the wearable echoes it in EVENT_MESSAGE_CONFIRMED when the
officer presses (firmware/safety.py). What the supervisor sees is its progress, each with a time:

    queued -> sent (published to the gateway) -> delivered (the gateway wrote it to the device)
           -> confirmed (the officer pressed)
    or not_sent / not_delivered, with the reason.

The book keeps every message of this process in memory (the API answers from it at once) and
writes each change to ``officer_messages`` behind it; a change the database refused is kept and
written on a later pass, as the downlink's own records are."""
from __future__ import annotations

import collections
import datetime as dt
import uuid
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.db import schema as t
from backend.incidents import rules
from firmware import frame as F

# kind name -> the COMMAND_MESSAGE argument; the names are the frame format's (firmware/frame.py)
MESSAGE_KINDS = {name: code for code, name in F.MESSAGE_NAMES.items()}
# What a supervisor may send; "colleague_needs_help" is the backend's own (nearby.py).
SUPERVISOR_KINDS = ("help_coming", "stay_put", "fall_back", "check_in", "all_clear")
COLLEAGUE_KIND = "colleague_needs_help"
# The words a supervisor reads (GET /api/v1/messages/kinds) and what the officer feels.
KIND_LABELS = {
    "help_coming": ("Help is coming", "three short, one long"),
    "stay_put": ("Stay where you are", "one long buzz"),
    "fall_back": ("Move back to safety", "five rapid pulses"),
    "check_in": ("Check in: press if OK", "two spaced pulses"),
    "all_clear": ("All clear", "long, then short"),
    "colleague_needs_help": ("A colleague near you needs help", "two bursts of three"),
}
STATES = ("queued", "sent", "delivered", "confirmed", "not_sent", "not_delivered")
# Side steps these messages add to an incident's timeline (AlertService.record); listed with the
# others in backend/incidents/rules.py TRANSITIONS.
STEP_MESSAGE_SENT = rules.MESSAGE_SENT
STEP_MESSAGE_CONFIRMED = rules.MESSAGE_CONFIRMED
STEP_COLLEAGUES_TOLD = rules.COLLEAGUES_TOLD
STEP_COLLEAGUE_CONFIRMED = rules.COLLEAGUE_CONFIRMED
# Messages kept in memory; older ones are answered from the database.
BOOK_SIZE = 5000
# A confirmation of a message this process did not send (a restart between) is matched in the
# database among those sent this recently: the device's confirm window is 30 s, and its outbox
# resends the event for minutes while the link is down.
CONFIRM_LOOKBACK_S = 600


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


@dataclass(slots=True)
class OfficerMessage:
    id: uuid.UUID
    agency_id: str
    officer_id: int
    officer_name: str | None
    device_id: int
    kind: str
    sent_by: str                      # "user:<username>" or "system"
    created_at: dt.datetime
    alert_id: uuid.UUID | None = None  # the incident it is about (a colleague's, for colleague_needs_help)
    distance_m: float | None = None   # colleague_needs_help: how far the officer was from the colleague
    gateway_id: str | None = None
    command_seq: int | None = None
    sent_at: dt.datetime | None = None
    delivered_at: dt.datetime | None = None
    confirmed_at: dt.datetime | None = None
    failed_at: dt.datetime | None = None
    error: str | None = None
    changed: bool = field(default=True, repr=False)

    @property
    def code(self) -> int:
        return MESSAGE_KINDS[self.kind]

    @property
    def word(self) -> int | None:
        """The message id the device echoes when the officer confirms."""
        return None if self.command_seq is None else self.command_seq & 0xFFFF

    @property
    def state(self) -> str:
        if self.confirmed_at is not None:
            return "confirmed"
        if self.failed_at is not None:
            return "not_delivered" if self.sent_at is not None else "not_sent"
        if self.delivered_at is not None:
            return "delivered"
        return "sent" if self.sent_at is not None else "queued"

    def public(self) -> dict:
        label, feel = KIND_LABELS[self.kind]
        return {
            "id": str(self.id), "officer_id": self.officer_id, "officer_name": self.officer_name,
            "device_id": self.device_id, "kind": self.kind, "label": label, "pattern": feel,
            "state": self.state, "sent_by": self.sent_by,
            "alert_id": str(self.alert_id) if self.alert_id else None,
            "distance_m": None if self.distance_m is None else round(self.distance_m),
            "gateway_id": self.gateway_id, "created_at": _iso(self.created_at), "sent_at": _iso(self.sent_at),
            "delivered_at": _iso(self.delivered_at), "confirmed_at": _iso(self.confirmed_at),
            "failed_at": _iso(self.failed_at), "error": self.error,
        }

    def row(self) -> dict:
        return dict(id=self.id, agency_id=self.agency_id, officer_id=self.officer_id, device_id=self.device_id,
                    kind=self.kind, sent_by=self.sent_by, created_at=self.created_at, alert_id=self.alert_id,
                    distance_m=self.distance_m, gateway_id=self.gateway_id, command_seq=self.command_seq,
                    sent_at=self.sent_at, delivered_at=self.delivered_at, confirmed_at=self.confirmed_at,
                    failed_at=self.failed_at, error=self.error)


def _from_row(r, officer_name: str | None) -> OfficerMessage:
    return OfficerMessage(
        id=r.id, agency_id=r.agency_id, officer_id=r.officer_id, officer_name=officer_name, device_id=r.device_id,
        kind=r.kind, sent_by=r.sent_by, created_at=r.created_at, alert_id=r.alert_id, distance_m=r.distance_m,
        gateway_id=r.gateway_id, command_seq=r.command_seq, sent_at=r.sent_at, delivered_at=r.delivered_at,
        confirmed_at=r.confirmed_at, failed_at=r.failed_at, error=r.error, changed=False)


class MessageBook:
    """Every message of this process and its progress; changes written behind to the database."""

    def __init__(self, engine: AsyncEngine | None, size: int = BOOK_SIZE):
        self._engine = engine
        self._size = size
        self._messages: collections.OrderedDict[uuid.UUID, OfficerMessage] = collections.OrderedDict()
        self._by_word: dict[tuple[int, int], OfficerMessage] = {}  # (device, word) -> the latest sent with it
        self._dirty: dict[uuid.UUID, OfficerMessage] = {}

    def add(self, message: OfficerMessage) -> OfficerMessage:
        self._messages[message.id] = message
        while len(self._messages) > self._size:
            _, old = self._messages.popitem(last=False)
            if old.word is not None and self._by_word.get((old.device_id, old.word)) is old:
                del self._by_word[(old.device_id, old.word)]
        self._touch(message)
        return message

    def get(self, message_id: uuid.UUID) -> OfficerMessage | None:
        return self._messages.get(message_id)

    def _touch(self, message: OfficerMessage) -> None:
        message.changed = True
        self._dirty[message.id] = message

    # ---- progress, as the downlink reports it -------------------------------------------------

    def sent(self, message: OfficerMessage, gateway: str, seq: int, at: dt.datetime) -> None:
        message.gateway_id, message.command_seq, message.sent_at = gateway, seq, at
        self._by_word[(message.device_id, seq & 0xFFFF)] = message
        self._touch(message)

    def failed(self, message: OfficerMessage, why: str, at: dt.datetime) -> None:
        message.failed_at, message.error = at, why
        self._touch(message)

    def retrying(self, message: OfficerMessage, why: str) -> None:
        """Not delivered yet; sent again (the state stays "sent", the reason is shown)."""
        message.error = why
        self._touch(message)

    def delivered(self, message: OfficerMessage, at: dt.datetime) -> None:
        message.delivered_at = at
        message.failed_at = message.error = None  # delivered after all (a late result)
        self._touch(message)

    def confirmed(self, device_id: int, word: int, at: dt.datetime) -> OfficerMessage | None:
        """The officer pressed: the message the device echoed, or None (unknown, or confirmed
        already: the device resends an event until acknowledged)."""
        message = self._by_word.get((device_id, word & 0xFFFF))
        if message is None or message.confirmed_at is not None:
            return None
        message.confirmed_at = at
        if message.delivered_at is None:
            message.delivered_at = at  # the device has it: its gateway's result was lost or late
        message.failed_at = message.error = None
        self._touch(message)
        return message

    async def confirmed_stored(self, device_id: int, word: int, at: dt.datetime) -> OfficerMessage | None:
        """:meth:`confirmed` for a message this process did not send (sent before a restart):
        the latest unconfirmed one the database holds for the device with that word, taken into
        the book. Raises the database's error."""
        if (device_id, word & 0xFFFF) in self._by_word:
            return self.confirmed(device_id, word, at)  # ours: None when it was confirmed already
        if self._engine is None:
            return None
        m = t.officer_messages
        query = (sa.select(m, t.officers.c.name.label("officer_name")).join(t.officers, t.officers.c.id == m.c.officer_id)
                 .where(m.c.device_id == device_id, m.c.confirmed_at.is_(None),
                        m.c.sent_at >= at - dt.timedelta(seconds=CONFIRM_LOOKBACK_S),
                        sa.func.mod(m.c.command_seq, 0x10000) == (word & 0xFFFF))
                 .order_by(m.c.sent_at.desc()).limit(1))
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None or row.id in self._messages:
            return None
        message = self.add(_from_row(row, row.officer_name))
        self._by_word[(device_id, word & 0xFFFF)] = message
        return self.confirmed(device_id, word, at)

    # ---- reading --------------------------------------------------------------------------------

    def in_memory(self, agency_id: str, *, officer_id: int | None = None, alert_id: uuid.UUID | None = None) -> list[OfficerMessage]:
        return [m for m in self._messages.values() if m.agency_id == agency_id
                and (officer_id is None or m.officer_id == officer_id) and (alert_id is None or m.alert_id == alert_id)]

    async def listed(self, agency_id: str, *, officer_id: int | None = None, alert_id: uuid.UUID | None = None,
                     limit: int = 200) -> list[OfficerMessage]:
        """Newest first: this process's messages, and older ones the database holds (when it answers)."""
        found = {m.id: m for m in self.in_memory(agency_id, officer_id=officer_id, alert_id=alert_id)}
        if self._engine is not None:
            m = t.officer_messages
            query = (sa.select(m, t.officers.c.name.label("officer_name"))
                     .join(t.officers, t.officers.c.id == m.c.officer_id)
                     .where(m.c.agency_id == agency_id).order_by(m.c.created_at.desc()).limit(limit))
            if officer_id is not None:
                query = query.where(m.c.officer_id == officer_id)
            if alert_id is not None:
                query = query.where(m.c.alert_id == alert_id)
            try:
                async with self._engine.connect() as conn:
                    for r in (await conn.execute(query)).all():
                        found.setdefault(r.id, _from_row(r, r.officer_name))
            except (sa.exc.SQLAlchemyError, OSError):
                pass  # the database is away: this process's messages still answer
        return sorted(found.values(), key=lambda x: x.created_at, reverse=True)[:limit]

    # ---- writing behind -------------------------------------------------------------------------

    @property
    def unsaved(self) -> int:
        return len(self._dirty)

    async def flush(self) -> None:
        """Write every changed message; raises the database's error (what is left stays dirty)."""
        if self._engine is None or not self._dirty:
            return
        batch = list(self._dirty.values())
        for message in batch:
            message.changed = False
        rows = [message.row() for message in batch]
        stmt = pg_insert(t.officer_messages)
        stmt = stmt.on_conflict_do_update(index_elements=["id"], set_={
            c: stmt.excluded[c] for c in ("gateway_id", "command_seq", "sent_at", "delivered_at", "confirmed_at",
                                          "failed_at", "error")})
        try:
            async with self._engine.begin() as conn:
                await conn.execute(stmt, rows)
        except BaseException:
            for message in batch:
                message.changed = True
            raise
        for message in batch:
            if not message.changed:
                self._dirty.pop(message.id, None)
