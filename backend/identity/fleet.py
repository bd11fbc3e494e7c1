"""Fleet records: agencies, officers, devices (with their keys), shift assignments and gateways.

The API, the CLI and the demo all provision through these functions."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.db import schema as t
from backend.identity import auth
from backend.identity.security import new_device_key, wrap_device_key, wrap_gateway_password
from backend.exceptions import Conflict, NotFound
from models.thresholds import PLACEMENTS, PRODUCT_PLACEMENT  # noqa: F401 (PLACEMENTS: the one list, re-exported)


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
                           placement: str = PRODUCT_PLACEMENT, key: bytes | None = None) -> ProvisionedDevice:
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
        if device is None:
            raise NotFound(f"device {device_label(device_id)}")
        if officer is None:
            raise NotFound(f"officer {officer_id}")
        if device.agency_id != officer.agency_id:
            raise ValueError("a device can only be assigned to an officer of its own agency")
        if device.status != "active":
            raise ValueError(f"device {device_label(device_id)} is {device.status}")
        await conn.execute(sa.update(t.assignments).where(t.assignments.c.device_id == device_id, t.assignments.c.ends_at.is_(None)).values(ends_at=now))
        return (await conn.execute(sa.insert(t.assignments).values(
            device_id=device_id, officer_id=officer_id, starts_at=starts_at or now, ends_at=ends_at,
        ).returning(t.assignments.c.id))).scalar_one()


def device_label(device_id: int) -> str:
    """A device id as the pages (common.js deviceHex), the CLI and every error show it: 0x00C0FFEE."""
    return f"0x{device_id:08X}"


async def retire_device(engine: AsyncEngine, device_id: int) -> None:
    """Conflict for a device already retired: its ``retired_at`` stays when it was retired."""
    now = dt.datetime.now(dt.timezone.utc)
    async with engine.begin() as conn:
        result = await conn.execute(sa.update(t.devices).where(t.devices.c.id == device_id, t.devices.c.status != "retired")
                                    .values(status="retired", retired_at=now))
        if result.rowcount == 0:
            retired = (await conn.execute(sa.select(t.devices.c.retired_at).where(t.devices.c.id == device_id))).first()
            if retired is None:
                raise NotFound(f"device {device_label(device_id)}")
            raise Conflict(f"device {device_label(device_id)} was already retired at {retired.retired_at:%Y-%m-%d %H:%M} UTC")
        await conn.execute(sa.update(t.assignments).where(t.assignments.c.device_id == device_id, t.assignments.c.ends_at.is_(None)).values(ends_at=now))


async def unassign_device(engine: AsyncEngine, device_id: int) -> None:
    """End the device's open assignment now (the shift is over)."""
    now = dt.datetime.now(dt.timezone.utc)
    async with engine.begin() as conn:
        await conn.execute(sa.update(t.assignments).where(
            t.assignments.c.device_id == device_id, t.assignments.c.ends_at.is_(None) | (t.assignments.c.ends_at > now),
        ).values(ends_at=now))


async def register_gateway(engine: AsyncEngine, secret: str, agency_id: str, gateway_id: str,
                           devices: list[int]) -> auth.GatewayCredentials:
    """A gateway with its API token and MQTT credentials (auth.register_gateway); its MQTT
    password is also kept wrapped under ``secret``, so the broker can be given it again
    (backend/identity/broker.py). Tell the broker afterwards: ``BrokerAdmin.converge``."""
    creds = await auth.register_gateway(engine, agency_id, gateway_id, devices)
    async with engine.begin() as conn:
        await conn.execute(sa.update(t.gateway_mqtt).where(t.gateway_mqtt.c.gateway_id == gateway_id).values(
            password_wrapped=wrap_gateway_password(secret, creds.mqtt_username, creds.mqtt_password)))
    return creds


async def retire_gateway(engine: AsyncEngine, agency_id: str, gateway_id: str) -> dt.datetime:
    """The gateway's token stops working now and the broker is to refuse it (``BrokerAdmin.converge``).
    NotFound when the agency has no such gateway; Conflict when it was already retired."""
    now = dt.datetime.now(dt.timezone.utc)
    async with engine.begin() as conn:
        row = (await conn.execute(sa.select(t.gateways.c.retired_at).where(
            t.gateways.c.id == gateway_id, t.gateways.c.agency_id == agency_id).with_for_update())).first()
        if row is None:
            raise NotFound(f"gateway {gateway_id}")
        if row.retired_at is not None:
            raise Conflict(f"gateway {gateway_id} was already retired at {row.retired_at:%Y-%m-%d %H:%M} UTC")
        await conn.execute(sa.update(t.gateways).where(t.gateways.c.id == gateway_id).values(retired_at=now))
    return now
