"""Fleet records: agencies, officers, devices (with their keys) and shift assignments.

The API, the CLI and the demo all provision through these functions."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.db import schema as t
from backend.identity.security import new_device_key, wrap_device_key
from backend.exceptions import NotFound

PLACEMENTS = ("wrist", "upper_arm", "chest", "waist")


@dataclass(frozen=True, slots=True)
class ProvisionedDevice:
    device_id: int
    agency_id: str
    key: bytes  # shown once, to be written onto the wearable; only the wrapped form is stored


async def ensure_agency(engine: AsyncEngine, agency_id: str, name: str | None = None) -> None:
    async with engine.begin() as conn:
        await conn.execute(pg_insert(t.agencies).values(id=agency_id, name=name or agency_id).on_conflict_do_nothing())


async def create_officer(engine: AsyncEngine, agency_id: str, badge: str, name: str, unit: str = "") -> int:
    async with engine.begin() as conn:
        return (await conn.execute(
            sa.insert(t.officers).values(agency_id=agency_id, badge=badge, name=name, unit=unit).returning(t.officers.c.id)
        )).scalar_one()


async def provision_device(engine: AsyncEngine, secret: str, agency_id: str, device_id: int,
                           placement: str = "upper_arm", key: bytes | None = None) -> ProvisionedDevice:
    if placement not in PLACEMENTS:
        raise ValueError(f"placement {placement!r} is not one of {PLACEMENTS}")
    if not 0 <= device_id <= 0xFFFFFFFF:
        raise ValueError("device_id is a 32-bit unsigned integer")
    key = key or new_device_key()
    async with engine.begin() as conn:
        await conn.execute(sa.insert(t.devices).values(
            id=device_id, agency_id=agency_id, key_wrapped=wrap_device_key(secret, device_id, key), placement=placement,
        ))
    return ProvisionedDevice(device_id, agency_id, key)


async def assign_device(engine: AsyncEngine, device_id: int, officer_id: int,
                        starts_at: dt.datetime | None = None, ends_at: dt.datetime | None = None) -> int:
    """Assign a device to an officer for a shift, ending any open assignment of that device."""
    now = dt.datetime.now(dt.timezone.utc)
    async with engine.begin() as conn:
        device = (await conn.execute(sa.select(t.devices.c.agency_id, t.devices.c.status).where(t.devices.c.id == device_id))).first()
        officer = (await conn.execute(sa.select(t.officers.c.agency_id).where(t.officers.c.id == officer_id))).first()
        if device is None or officer is None:
            raise NotFound("device or officer does not exist")
        if device.agency_id != officer.agency_id:
            raise ValueError("a device can only be assigned to an officer of its own agency")
        if device.status != "active":
            raise ValueError(f"device {device_id} is {device.status}")
        await conn.execute(sa.update(t.assignments).where(t.assignments.c.device_id == device_id, t.assignments.c.ends_at.is_(None)).values(ends_at=now))
        return (await conn.execute(sa.insert(t.assignments).values(
            device_id=device_id, officer_id=officer_id, starts_at=starts_at or now, ends_at=ends_at,
        ).returning(t.assignments.c.id))).scalar_one()


async def retire_device(engine: AsyncEngine, device_id: int) -> None:
    now = dt.datetime.now(dt.timezone.utc)
    async with engine.begin() as conn:
        result = await conn.execute(sa.update(t.devices).where(t.devices.c.id == device_id).values(status="retired", retired_at=now))
        if result.rowcount == 0:
            raise NotFound(f"device {device_id}")
        await conn.execute(sa.update(t.assignments).where(t.assignments.c.device_id == device_id, t.assignments.c.ends_at.is_(None)).values(ends_at=now))


async def unassign_device(engine: AsyncEngine, device_id: int) -> None:
    """End the device's open assignment now (the shift is over)."""
    now = dt.datetime.now(dt.timezone.utc)
    async with engine.begin() as conn:
        await conn.execute(sa.update(t.assignments).where(
            t.assignments.c.device_id == device_id, t.assignments.c.ends_at.is_(None) | (t.assignments.c.ends_at > now),
        ).values(ends_at=now))
