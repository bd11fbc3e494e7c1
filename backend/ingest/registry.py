"""What the backend knows about devices: keys, agency, status and current officer.

Loaded from the database and refreshed periodically; the cached copy keeps ingest (and
alerts) working while the database is away."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import sqlalchemy as sa
from cryptography.exceptions import InvalidTag
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.db import schema as t
from backend.identity.security import unwrap_device_key
from backend.ingest import fastpath, replay_state
from firmware import frame as F

log = logging.getLogger("vigil.registry")


@dataclass(slots=True)
class DeviceRecord:
    device_id: int
    agency_id: str
    keys: F.DeviceKeys
    status: str
    placement: str
    officer_id: int | None
    officer_name: str | None
    officer_unit: str | None
    # replay windows: firmware.frame.ReplayGuard's methods, compiled when built (fastpath.replay_window)
    replay: F.ReplayGuard = field(default_factory=fastpath.replay_window)
    # the frames acknowledged to the broker: saved, and what a restart refuses (ingest/replay_state.py)
    acked: F.ReplayGuard = field(default_factory=fastpath.replay_window)
    # Registered gateways that serve this device; empty: none registered (the broker's ACL alone
    # decides who may publish for it).
    gateways: frozenset[str] = frozenset()


def _seeded(saved: F.ReplayGuard | None) -> F.ReplayGuard:
    """A fresh window, or a copy of the saved one."""
    guard = fastpath.replay_window()
    if saved is not None:
        guard.restore(*saved.state())
    return guard


class DeviceRegistry:
    def __init__(self, engine: AsyncEngine, secret: str):
        self._engine = engine
        self._secret = secret
        self.devices: dict[int, DeviceRecord] = {}
        self.unreadable: set[int] = set()  # devices whose wrapped key does not open (logged once each)
        self.loaded = False
        self._acked_changed: set[int] = set()

    def acknowledged(self, frames) -> None:
        """These verified frames were acknowledged to the broker: it will never hand them back."""
        if fastpath.AVAILABLE:
            fastpath.module().acknowledge(frames, self._acked_changed)
        else:
            self.acknowledged_reference(frames)

    def acknowledged_reference(self, frames) -> None:
        """:meth:`acknowledged` in pure Python (the compiled one is tested against it)."""
        for frame in frames:
            if frame is None:
                continue
            record = frame.device
            try:
                record.acked.accept(frame.header.seq)
            except F.FrameError:  # older than the saved window: nothing to add
                continue
            self._acked_changed.add(record.device_id)

    def take_acked_changes(self) -> set[int]:
        changed, self._acked_changed = self._acked_changed, set()
        return changed

    def mark_acked_changed(self, device_ids) -> None:
        self._acked_changed.update(device_ids)

    def get(self, device_id: int) -> DeviceRecord | None:
        return self.devices.get(device_id)

    async def refresh(self) -> None:
        """Reload from the database. Replay state of known devices is kept across reloads."""
        current = (
            sa.select(t.assignments.c.device_id, t.officers.c.id, t.officers.c.name, t.officers.c.unit)
            .join(t.officers, t.officers.c.id == t.assignments.c.officer_id)
            .where(t.assignments.c.ends_at.is_(None) | (t.assignments.c.ends_at > sa.func.now()))
            .where(t.assignments.c.starts_at <= sa.func.now())
            .subquery()
        )
        query = sa.select(
            t.devices.c.id, t.devices.c.agency_id, t.devices.c.key_wrapped, t.devices.c.status,
            t.devices.c.placement, current.c.id.label("officer_id"), current.c.name, current.c.unit,
        ).select_from(t.devices.outerjoin(current, current.c.device_id == t.devices.c.id))
        served = (sa.select(t.gateway_devices.c.device_id, t.gateway_devices.c.gateway_id)
                  .join(t.gateways, t.gateways.c.id == t.gateway_devices.c.gateway_id)
                  .where(t.gateways.c.retired_at.is_(None)))
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
            gateways: dict[int, set[str]] = {}
            for device_id, gateway_id in (await conn.execute(served)).all():
                gateways.setdefault(device_id, set()).add(gateway_id)
            new_ids = [row.id for row in rows if row.id not in self.devices]
            # a device first seen by this process continues the window saved before a restart
            saved = await replay_state.load(conn, new_ids) if new_ids else {}
        fresh: dict[int, DeviceRecord] = {}
        for row in rows:
            old = self.devices.get(row.id)
            if old is not None:
                keys = old.keys
            else:
                try:
                    keys = F.DeviceKeys(unwrap_device_key(self._secret, row.id, row.key_wrapped))
                except (InvalidTag, ValueError) as exc:
                    # one device wrapped under another secret must not keep every other device out
                    if row.id not in self.unreadable:
                        log.error("device %d: its key does not unwrap with VIGIL_SECRET_KEY (%s); its frames are "
                                  "refused as from an unknown device until it is provisioned again",
                                  row.id, type(exc).__name__)
                    self.unreadable.add(row.id)
                    continue
            fresh[row.id] = DeviceRecord(
                device_id=row.id, agency_id=row.agency_id, keys=keys, status=row.status,
                placement=row.placement, officer_id=row.officer_id, officer_name=row.name,
                officer_unit=row.unit, replay=old.replay if old else _seeded(saved.get(row.id)),
                acked=old.acked if old else _seeded(saved.get(row.id)),
                gateways=frozenset(gateways.get(row.id, ())),
            )
        self.devices = fresh
        if not self.loaded:
            log.info("device registry loaded: %d devices", len(fresh))
        self.loaded = True
