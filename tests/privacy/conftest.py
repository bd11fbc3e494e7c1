"""Fixtures of the privacy tests: a migrated database with two agencies' officers and their
biometric rows, a running backend, and tokens for each role."""
from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from dataclasses import dataclass

import pytest
import sqlalchemy as sa

from backend.identity import fleet
from backend.db import engine as db
from backend.db import schema as t
from backend.app.server import serve
from tests.backend.conftest import backend_settings, person_token


NOW = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def migrate(settings) -> None:
    db.upgrade(settings)


@dataclass
class World:
    settings: object
    agency: str
    other_agency: str
    alice: int      # officer of `agency`, with features
    bob: int        # officer of `agency`
    carol: int      # officer of `other_agency`
    alice_device: int
    has_raw: bool

    def token(self, role: str, officer_id: int | None = None, agency: str | None = None, sub: str | None = None) -> str:
        """A token of an account that exists (tokens of accounts that do not are refused)."""
        return person_token(self.settings, role, agency or self.agency, officer_id,
                            username=sub or f"{role}-{officer_id if officer_id is not None else 'x'}-{agency or self.agency}")

    def auth(self, role: str, officer_id: int | None = None, **kw) -> dict:
        return {"Authorization": f"Bearer {self.token(role, officer_id, **kw)}"}


async def insert_features(engine, device_id: int, officer_id: int, times: list[dt.datetime]) -> None:
    async with engine.begin() as conn:
        await conn.execute(sa.text("select vigil_ensure_partitions(40, 3)"))
        await conn.execute(sa.insert(t.features), [
            {"time": ts, "device_id": device_id, "officer_id": officer_id, "heart_rate": 80.0 + i % 20, "hr_quality": 0.9,
             "activity": "walking", "posture": "upright", "cadence": 1.8, "motion_energy": 0.3} for i, ts in enumerate(times)])


async def insert_raw(engine, device_id: int, officer_id: int, times: list[dt.datetime], held_by: uuid.UUID | None = None) -> None:
    async with engine.begin() as conn:
        await conn.execute(sa.text("select vigil_ensure_partitions(40, 3)"))
        for ts in times:
            await conn.execute(sa.text(
                "insert into raw_windows (time, device_id, officer_id, rate_hz, samples, ppg, accel_mg, held_by_alert) "
                "values (:t, :d, :o, 50, 2, array[1, 2], array[1, 2, 3, 4, 5, 6]::smallint[], :h)"),
                {"t": ts, "d": device_id, "o": officer_id, "h": held_by})


async def open_incident(engine, agency: str, officer_id: int, device_id: int, raised_at: dt.datetime, state: str = "raised") -> uuid.UUID:
    aid = uuid.uuid4()
    async with engine.begin() as conn:
        await conn.execute(sa.insert(t.alerts).values(
            id=aid, agency_id=agency, officer_id=officer_id, device_id=device_id, kind="man_down", priority=1, state=state,
            raised_at=raised_at, seq=int(raised_at.timestamp()), explanation={"why": "test"}, updated_at=raised_at))
    return aid


@pytest.fixture
async def world(database_url, mqtt_broker, agency):
    host, port = mqtt_broker
    settings = backend_settings(database_url, host, port, agency)
    migrate(settings)
    engine = db.create_engine(settings)
    other = agency + "x"
    await fleet.ensure_agency(engine, agency)
    await fleet.ensure_agency(engine, other)
    alice = await fleet.create_officer(engine, agency, "A-1", "Officer Alice")
    bob = await fleet.create_officer(engine, agency, "B-2", "Officer Bob")
    carol = await fleet.create_officer(engine, other, "C-3", "Officer Carol")
    secret = settings.secret_key.get_secret_value()
    device = 0x00C0FFEE
    await fleet.provision_device(engine, secret, agency, device)
    await fleet.provision_device(engine, secret, agency, device + 1)
    await fleet.provision_device(engine, secret, other, device + 2)
    await insert_features(engine, device, alice, [NOW - dt.timedelta(minutes=m) for m in range(0, 120, 5)])
    await insert_features(engine, device + 1, bob, [NOW - dt.timedelta(minutes=m) for m in range(0, 60, 5)])
    await insert_features(engine, device + 2, carol, [NOW - dt.timedelta(minutes=m) for m in range(0, 60, 5)])
    async with engine.connect() as conn:
        has_raw = (await conn.execute(sa.text("select to_regclass('public.raw_windows') is not null"))).scalar_one()
    if has_raw:
        await insert_raw(engine, device, alice, [NOW - dt.timedelta(minutes=m) for m in range(0, 60, 10)])
    await engine.dispose()
    yield World(settings, agency, other, alice, bob, carol, device, bool(has_raw))


@pytest.fixture
async def backend(world):
    async with serve(world.settings) as running:
        await asyncio.wait_for(running.runtime.privacy.ready.wait(), 15)
        yield running
