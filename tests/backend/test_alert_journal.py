"""The alert journal (backend/incidents/journal.py) and the store's use of it: a change is on
disk before save() returns, survives the process, is stored at start-up, and a hung database
never holds up the event path (issue 15, items 3 and 10)."""
from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import uuid

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from backend.app.metrics import BackendMetrics
from backend.db import schema as t
from backend.incidents.journal import AlertJournal
from backend.incidents.model import Alert
from backend.incidents.store import AlertStore


def _alert(device_id: int = 7, seq: int = 1, agency: str = "nowhere") -> Alert:
    now = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.timezone.utc)
    return Alert(id=uuid.uuid4(), agency_id=agency, device_id=device_id, officer_id=None, officer_name=None,
                 kind="sos", priority=1, state="raised", raised_at=now, device_time=None, seq=seq,
                 explanation={"detector": "device"}, location=None, updated_at=now,
                 transitions=[{"state": "raised", "at": now, "actor": f"device:{device_id}", "note": "sos"}])


async def test_a_change_is_fsynced_before_save_returns_and_read_back_after_the_process(tmp_path):
    synced = []
    journal = AlertJournal(tmp_path / "j.alerts", fsync=lambda fd: (os.fsync(fd), synced.append(os.fstat(fd).st_size)))
    engine = create_async_engine("postgresql+asyncpg://vigil@127.0.0.1:1/none")  # nobody listens: never stored
    store = AlertStore(engine, BackendMetrics(), journal)
    alert = _alert()
    await store.save(alert, insert_only=True, wait=False)
    assert synced and synced[-1] == os.path.getsize(tmp_path / "j.alerts") > 0  # on disk when save returned
    journal.close()
    # another process (a restart) reads the same change back
    again = AlertJournal(tmp_path / "j.alerts").read()
    assert [(w.alert_id, w.row["kind"], [tr["state"] for tr in w.transitions]) for w in again] == [(alert.id, "sos", ["raised"])]
    await engine.dispose()


def test_a_torn_last_record_is_ignored_and_the_rest_kept(tmp_path):
    path = tmp_path / "j.alerts"
    journal = AlertJournal(path)
    asyncio.run(journal.append({"n": 1}))
    asyncio.run(journal.append({"n": 2}))
    journal.close()
    with open(path, "ab") as f:
        f.write(b"\x40\x00\x00\x00garbage")  # a record whose write the crash cut short
    assert AlertJournal(path).read() == [{"n": 1}, {"n": 2}]


def test_the_journal_is_not_emptied_while_an_append_is_under_way(tmp_path):
    journal = AlertJournal(tmp_path / "j.alerts")
    asyncio.run(journal.append({"n": 1}))
    journal.appending += 1  # as between an append's write and its return
    assert journal.clear() is False and os.path.getsize(tmp_path / "j.alerts") > 0
    journal.appending -= 1
    assert journal.clear() is True and os.path.getsize(tmp_path / "j.alerts") == 0


async def test_a_hung_database_never_holds_up_the_event_path(tmp_path):
    """A database that accepts connections and never answers: SOS after SOS is journaled and
    queued at once; before, the first write was awaited inline and the next SOS waited behind it."""
    async def swallow(reader, writer):
        with contextlib.suppress(Exception):
            await reader.read()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    engine = create_async_engine(f"postgresql+asyncpg://vigil@127.0.0.1:{port}/vigil")
    store = AlertStore(engine, BackendMetrics(), AlertJournal(tmp_path / "j.alerts"))
    stop = asyncio.Event()
    writer = asyncio.create_task(store.run_retry(stop, 0.1))
    try:
        async with asyncio.timeout(5):  # the connect alone would hang for asyncpg's 60 s
            for seq in range(1, 4):
                await store.save(_alert(seq=seq), insert_only=True, wait=False)
        assert store.pending == 3
    finally:
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer
        server.close()
        await engine.dispose()


@pytest.mark.integration
async def test_recover_stores_what_the_journal_holds_and_sets_aside_what_cannot_be(database_url, agency, tmp_path):
    from backend.db import engine as db
    from backend.identity import fleet
    from tests.backend.conftest import backend_settings

    settings = backend_settings(database_url, "127.0.0.1", 1883, agency)
    db.upgrade(settings)
    engine = db.create_engine(settings)
    await fleet.ensure_agency(engine, agency)
    await fleet.provision_device(engine, settings.secret_key.get_secret_value(), agency, 0x00AA0001)
    path = tmp_path / "j.alerts"
    dead = create_async_engine("postgresql+asyncpg://vigil@127.0.0.1:1/none")
    before = AlertStore(dead, BackendMetrics(), AlertJournal(path))
    good, orphan = _alert(0x00AA0001, 5, agency), _alert(0x00AA0002, 6, "no-such-agency")
    await before.save(good, insert_only=True, wait=False)
    await before.save(orphan, insert_only=True, wait=False)  # its agency does not exist: refused for good
    await dead.dispose()
    # the process dies here; a new one starts on the same journal
    after = AlertStore(engine, BackendMetrics(), AlertJournal(path))
    assert await after.recover() == 1
    async with engine.connect() as conn:
        ids = set((await conn.execute(sa.select(t.alerts.c.id).where(t.alerts.c.device_id.in_([0x00AA0001, 0x00AA0002])))).scalars())
    assert ids == {good.id}
    assert str(orphan.id) in (tmp_path / "j.alerts.refused").read_text()
    assert os.path.getsize(path) == 0 and after.pending == 0
    await engine.dispose()


@pytest.mark.integration
async def test_a_change_made_before_recovery_is_stored_once_recovery_is_done(database_url, agency, tmp_path):
    """The writer waits for start-up recovery; a change saved meanwhile (queued, journaled) is
    stored right after it, not at the next change."""
    from backend.db import engine as db
    from backend.identity import fleet
    from tests.backend.conftest import backend_settings

    settings = backend_settings(database_url, "127.0.0.1", 1883, agency)
    db.upgrade(settings)
    engine = db.create_engine(settings)
    await fleet.ensure_agency(engine, agency)
    await fleet.provision_device(engine, settings.secret_key.get_secret_value(), agency, 0x00AA0003)
    store = AlertStore(engine, BackendMetrics(), AlertJournal(tmp_path / "j.alerts"))
    stop = asyncio.Event()
    writer = asyncio.create_task(store.run_retry(stop, 0.1))
    try:
        early = _alert(0x00AA0003, 9, agency)
        await store.save(early, insert_only=True, wait=False)  # before recovery ran
        await asyncio.sleep(0.2)
        assert store.pending == 1  # the writer waits for recovery
        await store.recover()
        assert await store.flush(5)
        async with engine.connect() as conn:
            assert (await conn.execute(sa.select(sa.func.count()).select_from(t.alerts).where(t.alerts.c.id == early.id))).scalar() == 1
    finally:
        stop.set()
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer
        await engine.dispose()
