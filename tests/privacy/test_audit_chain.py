"""Tampering with the audit chain (edit, delete, reorder) is caught by the real
``vigil audit verify`` command, which names the entry."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import sqlalchemy as sa

from backend.privacy import audit
from backend.db import engine as db

pytestmark = pytest.mark.integration


def vigil_audit_verify(settings, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "VIGIL_DATABASE_URL": settings.database_url}
    return subprocess.run([sys.executable, "-m", "backend.cli", "audit", "verify", *extra], env=env,
                          capture_output=True, text=True, timeout=60)


def tamper(settings, *statements: str) -> None:
    """What an insider with the table owner's or a superuser's rights can do: switch off the
    append-only trigger and rewrite rows."""
    admin = sa.create_engine(settings.sync_database_url)
    with admin.begin() as conn:
        conn.execute(sa.text("alter table audit_log disable trigger audit_log_append_only"))
        for s in statements:
            conn.execute(sa.text(s))
        conn.execute(sa.text("alter table audit_log enable trigger audit_log_append_only"))
    admin.dispose()


async def test_edit_delete_and_reorder_are_detected_by_vigil_audit_verify(world, tmp_path):
    engine = db.create_engine(world.settings)
    for i in range(6):
        await audit.record(engine, f"user:sup-{i}", "access", f"officer:{world.alice}", "safety_response", "granted",
                           {"data_class": "derived_features", "n": i}, agency_id=world.agency)
    chain = await audit.read_chain(engine)
    await engine.dispose()
    n = len(chain)
    ok = vigil_audit_verify(world.settings)
    assert ok.returncode == 0 and f"audit chain OK: {n} entries" in ok.stdout, ok.stderr

    target = chain[2]  # entry 3
    # edit: an access becomes a refusal
    tamper(world.settings, f"update audit_log set outcome = 'refused' where seq = {target['seq']}")
    bad = vigil_audit_verify(world.settings)
    assert bad.returncode == 1 and f"entry {target['seq']}: edited" in bad.stderr, bad.stderr
    # edit and re-hash the entry to hide it: the next entry's link gives it away
    row = dict(target, outcome="refused")
    forged = audit.entry_hash(row["prev_hash"], row)
    tamper(world.settings, f"update audit_log set hash = '{forged}' where seq = {target['seq']}")
    bad = vigil_audit_verify(world.settings)
    assert bad.returncode == 1 and f"entry {target['seq']}: edited or replaced" in bad.stderr, bad.stderr
    tamper(world.settings, f"update audit_log set outcome = 'granted', hash = '{target['hash']}' where seq = {target['seq']}")
    assert vigil_audit_verify(world.settings).returncode == 0

    # delete entry 4
    victim = chain[3]
    tamper(world.settings, f"delete from audit_log where seq = {victim['seq']}")
    bad = vigil_audit_verify(world.settings)
    assert bad.returncode == 1 and f"entry {victim['seq']}: deleted" in bad.stderr, bad.stderr
    # ... and renumber the rest to close the gap: still caught
    tamper(world.settings, f"update audit_log set seq = seq + 1000 where seq > {victim['seq']}",
           "update audit_log set seq = seq - 1001 where seq > 1000")
    bad = vigil_audit_verify(world.settings)
    assert bad.returncode == 1 and f"entry {victim['seq']}: " in bad.stderr, bad.stderr
    tamper(world.settings, f"update audit_log set seq = seq + 1000 where seq >= {victim['seq']}",
           "update audit_log set seq = seq - 999 where seq > 1000")
    cols = "seq, at, actor, action, subject, purpose, outcome, agency_id, details, prev_hash, hash"
    admin = sa.create_engine(world.settings.sync_database_url)
    with admin.begin() as conn:
        conn.execute(sa.text(f"insert into audit_log ({cols}) values (:seq, :at, :actor, :action, :subject, :purpose, :outcome, "
                             ":agency_id, cast(:details as jsonb), :prev_hash, :hash)"),
                     {**victim, "details": __import__("json").dumps(victim["details"])})
    admin.dispose()
    assert vigil_audit_verify(world.settings).returncode == 0

    # reorder entries 2 and 3
    a, b = chain[1]["seq"], chain[2]["seq"]
    tamper(world.settings, f"update audit_log set seq = -1 where seq = {a}", f"update audit_log set seq = {a} where seq = {b}",
           f"update audit_log set seq = {b} where seq = -1")
    bad = vigil_audit_verify(world.settings)
    assert bad.returncode == 1 and f"entry {a}: reordered" in bad.stderr, bad.stderr
    tamper(world.settings, f"update audit_log set seq = -1 where seq = {a}", f"update audit_log set seq = {a} where seq = {b}",
           f"update audit_log set seq = {b} where seq = -1")

    # truncating the newest entries is caught against an anchor written earlier
    anchor = tmp_path / "audit-head.json"
    env = {**os.environ, "VIGIL_DATABASE_URL": world.settings.database_url}
    subprocess.run([sys.executable, "-m", "backend.cli", "audit", "anchor", str(anchor)], env=env, check=True, capture_output=True)
    assert vigil_audit_verify(world.settings, "--anchor", str(anchor)).returncode == 0
    tamper(world.settings, f"delete from audit_log where seq = {n}")
    assert vigil_audit_verify(world.settings).returncode == 0  # invisible without the anchor ...
    bad = vigil_audit_verify(world.settings, "--anchor", str(anchor))
    assert bad.returncode == 1 and f"entry {n}: deleted" in bad.stderr, bad.stderr  # ... caught with it


async def test_alert_transitions_and_provisioning_enter_the_chain_without_secrets(world):
    from tests.privacy.conftest import NOW, open_incident

    engine = db.create_engine(world.settings)
    alert = await open_incident(engine, world.agency, world.alice, world.alice_device, NOW)
    async with engine.begin() as conn:
        await conn.execute(sa.text("insert into alert_transitions (alert_id, state, at, actor, note) values (:a, 'acknowledged', now(), 'user:sup-1', '')"),
                           {"a": alert})
    await audit.drain_outbox(engine)
    chain = await audit.read_chain(engine)
    await engine.dispose()
    steps = [e for e in chain if e["action"] == "alert.transition"]
    assert [(e["actor"], e["subject"], e["details"]["state"], e["agency_id"]) for e in steps] == \
        [("user:sup-1", f"alert:{alert}", "acknowledged", world.agency)]
    devices = [e for e in chain if e["action"] == "provisioning.devices.insert"]
    assert len(devices) == 3 and all("key_wrapped" not in e["details"] for e in devices)
    assert audit.verify_rows(chain).ok


async def test_device_heartbeat_writes_stay_out_of_the_chain_and_real_changes_enter_it(world):
    engine = db.create_engine(world.settings)
    await audit.drain_outbox(engine)
    before = len(await audit.read_chain(engine))
    async with engine.begin() as conn:  # what device status writes every few seconds
        for pct in (80, 79, 78):
            await conn.execute(sa.text("update devices set last_seen = now(), battery_pct = :p where id = :d"),
                               {"p": pct, "d": world.alice_device})
        await conn.execute(sa.text("update devices set firmware = 'fw-9.9' where id = :d"), {"d": world.alice_device})
        await conn.execute(sa.text("update devices set status = 'retired', retired_at = now() where id = :d"),
                           {"d": world.alice_device + 1})
    await audit.drain_outbox(engine)
    chain = await audit.read_chain(engine)
    await engine.dispose()
    new = [(e["action"], e["subject"]) for e in chain[before:]]
    assert new == [("provisioning.devices.update", f"devices:{world.alice_device}"),
                   ("provisioning.devices.update", f"devices:{world.alice_device + 1}")]
    assert chain[before]["details"]["firmware"] == "fw-9.9"
    assert audit.verify_rows(chain).ok
