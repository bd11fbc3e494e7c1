"""Retention with the clock moved: raw windows go after 24 h, derived features after 30 days,
what lies inside an incident's span stays; every deletion is audited."""
from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from backend.privacy import audit, retention
from backend.db import engine as db
from backend.privacy.service import PrivacyService
from tests.privacy.conftest import NOW, insert_raw, open_incident

pytestmark = pytest.mark.integration


async def _count(engine, sql: str, **params) -> int:
    async with engine.connect() as conn:
        return (await conn.execute(sa.text(sql), params)).scalar_one()


async def test_clock_moves_past_the_limits_and_only_held_data_stays(world):
    engine = db.create_engine(world.settings)
    clock = [NOW]
    privacy = PrivacyService(engine, world.settings, now=lambda: clock[0])
    await privacy.start()
    # Alice has an open incident raised 10 min ago: her data from 20 min before it is held.
    alert = await open_incident(engine, world.agency, world.alice, world.alice_device, NOW - dt.timedelta(minutes=10))
    if world.has_raw:
        # one old raw window explicitly held for the incident by detection
        await insert_raw(engine, world.alice_device, world.alice, [NOW - dt.timedelta(hours=3)], held_by=alert)
    features_before = await _count(engine, "select count(*) from features")
    held_features = await _count(engine, "select count(*) from features where officer_id = :o and time >= :s",
                                 o=world.alice, s=NOW - dt.timedelta(minutes=20))
    assert held_features == 5

    # nothing is old yet
    report = await privacy.run_retention_once()
    assert report["derived_features"]["rows_deleted"] == 0

    clock[0] = NOW + dt.timedelta(hours=25)
    report = await privacy.run_retention_once()
    if world.has_raw:
        raw_left = await _count(engine, "select count(*) from raw_windows")
        # the explicitly held window and the three inside the incident span (now-20 min .. clock+15 min) remain
        assert raw_left == 1 + 3, report
        assert report["raw_waveforms"]["rows_deleted"] == 7 - raw_left
    assert await _count(engine, "select count(*) from features") == features_before  # derived: 30 days

    # the incident is resolved 5 min after it was raised
    async with engine.begin() as conn:
        await conn.execute(sa.text("update alerts set state = 'resolved', outcome = 'real_emergency', updated_at = :t where id = :a"),
                           {"t": NOW - dt.timedelta(minutes=5), "a": alert})
    clock[0] = NOW + dt.timedelta(days=31)
    report = await privacy.run_retention_once()
    left = await _count(engine, "select count(*) from features")
    # held: now-20 min .. resolved (now-5 min) + 15 min hold-after => 5 rows of Alice's
    assert left == held_features, report
    assert await _count(engine, "select count(*) from features where officer_id <> :o", o=world.alice) == 0
    assert report["derived_features"]["rows_deleted"] == features_before - left
    assert report["derived_features"]["partitions_dropped"], report  # whole expired days went at once

    # the incident record is deleted: its windows go with it on the next run
    async with engine.begin() as conn:
        await conn.execute(sa.text("delete from alert_transitions where alert_id = :a"), {"a": alert})
        await conn.execute(sa.text("delete from alerts where id = :a"), {"a": alert})
    await privacy.run_retention_once()
    assert await _count(engine, "select count(*) from features") == 0
    if world.has_raw:
        assert await _count(engine, "select count(*) from raw_windows") == 0

    chain = await audit.read_chain(engine)
    deletions = [e for e in chain if e["action"] == "retention.delete"]
    total = {}
    for e in deletions:
        total[e["subject"]] = total.get(e["subject"], 0) + e["details"]["rows_deleted"]
    assert total["data_class:derived_features"] == features_before
    if world.has_raw:
        assert total["data_class:raw_waveforms"] == 7
    assert (await audit.verify(engine)).ok
    await engine.dispose()


async def test_two_retention_passes_at_once_neither_deadlocks(world):
    """Two passes over the same expired partitions at the same moment (two backends, or the
    CLI beside the service) both finish: the second waits for the first. Without the pass
    lock both held the parent shared and then waited for each other to drop from it
    ("deadlock detected", seen in CI). The first pass is held between its count and its drop
    until the second has started, the interleaving that deadlocked."""
    import asyncio

    engine = db.create_engine(world.settings)
    later = NOW + dt.timedelta(days=31)
    gate = asyncio.Event()
    started = asyncio.Event()

    async def held_open():
        async with engine.begin() as conn:  # a pass that already holds the parents shared
            await conn.execute(sa.text("select pg_advisory_xact_lock(:key)"), {"key": retention.RETENTION_LOCK})
            await conn.execute(sa.text("select count(*) from features"))
            started.set()
            await gate.wait()
            # ... and now drops an expired partition, as a pass does after counting
            expired = [name for name, _lo, hi in await retention._partitions(conn, "features", "native_partitioning")
                       if (hi if hi.tzinfo else hi.replace(tzinfo=dt.timezone.utc)) <= later - dt.timedelta(days=30)]
            assert expired
            await conn.execute(sa.text("select vigil_drop_expired_partition(cast(:p as regclass), cast(:c as timestamptz))"),
                               {"p": expired[0], "c": later - dt.timedelta(days=30)})

    holder = asyncio.create_task(held_open())
    await started.wait()
    second = asyncio.create_task(PrivacyService(engine, world.settings, now=lambda: later).run_retention_once())
    await asyncio.sleep(0.5)
    assert not second.done()  # it waits for the first pass instead of taking the parent shared
    gate.set()
    await holder
    report = await asyncio.wait_for(second, 30)
    assert report["derived_features"]["rows_deleted"] > 0 or report["derived_features"]["partitions_dropped"], report
    assert await _count(engine, "select count(*) from features where time < :c", c=later - dt.timedelta(days=30)) == 0
    await engine.dispose()
