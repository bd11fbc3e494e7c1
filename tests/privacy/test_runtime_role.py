"""Least privilege at runtime: the backend and every privacy job run as a login role that is only
a member of vigil_api (owns nothing); ``vigil backend run`` refuses a superuser or an owner in
production. Real PostgreSQL, the real backend, the real CLI."""
from __future__ import annotations

import asyncio
import datetime as dt
import os
import subprocess
import sys
import time
import uuid

import httpx
import pytest
import sqlalchemy as sa

from backend.app.server import serve
from backend.db import engine as db
from backend.identity import fleet
from backend.local import infra
from backend.privacy import audit, reports, store
from backend.privacy.loader import SHIPPED_POLICY
from backend.privacy.service import PrivacyService, apply_grants
from tests.privacy.conftest import NOW

pytestmark = pytest.mark.integration


def _as_role(url: str, role: str) -> str:
    return sa.engine.make_url(url).set(username=role, password=None).render_as_string(hide_password=False)


def _admin(world):
    return sa.create_engine(world.settings.sync_database_url, isolation_level="AUTOCOMMIT")


@pytest.fixture
def login_role(world):
    """make(*member_of) -> a fresh login role that is a member of those roles only; dropped after."""
    made = []

    def make(*member_of: str) -> str:
        name = "rt_" + uuid.uuid4().hex[:10]
        with _admin(world).connect() as conn:
            conn.execute(sa.text(f"create role {name} login"))
            for role in member_of:
                conn.execute(sa.text(f"grant {role} to {name}"))
        made.append(name)
        return name

    yield make
    admin = _admin(world)
    with admin.connect() as conn:
        for name in made:
            conn.execute(sa.text(f"drop owned by {name}"))
            conn.execute(sa.text(f"drop role if exists {name}"))
    admin.dispose()


def runtime_settings(world, role: str):
    return world.settings.model_copy(update={"database_url": _as_role(world.settings.database_url, role),
                                             "migration_database_url": world.settings.database_url})


async def test_every_privacy_part_works_as_a_member_of_the_runtime_role(world, login_role):
    settings = runtime_settings(world, login_role("vigil_api"))
    engine = db.create_engine(settings)
    owner = db.create_engine(world.settings)
    try:
        assert await db.runtime_role_problems(engine) == []
        assert any("superuser" in p for p in await db.runtime_role_problems(owner))

        # start-up (grants re-applied, policy installed) and the audit outbox, inside the real backend
        async with serve(settings) as backend:
            await asyncio.wait_for(backend.runtime.privacy.ready.wait(), 15)
            async with httpx.AsyncClient(base_url=backend.url) as http:
                assert (await http.get("/api/v1/health")).status_code == 200
        officer = await fleet.create_officer(engine, world.agency, "RT-1", "Officer Runtime")  # a provisioning trigger
        await audit.drain_outbox(engine)
        chain = await audit.read_chain(owner)
        assert any(e["action"] == "provisioning.officers.insert" and e["subject"] == f"officers:{officer}" for e in chain)

        # grants and partitions again, a policy proposal, reports, retention (drops whole partitions)
        await apply_grants(engine)
        await db.ensure_partitions(engine)
        changed = SHIPPED_POLICY.read_text().replace('version: "2025-10.1"', 'version: "2025-12.1"')
        proposed = await store.propose(engine, changed, "cli:runtime-test", NOW)
        assert proposed.policy.version == "2025-12.1"
        privacy = PrivacyService(engine, settings, now=lambda: NOW + dt.timedelta(days=31))
        await privacy.start()
        report = await reports.transparency_report(engine, (await privacy.policies.current(NOW)).policy, agency_id=world.agency, until=NOW)
        assert report["agency_id"] == world.agency
        done = await privacy.run_retention_once()
        assert done["derived_features"]["rows_deleted"] == 24 + 12 + 12 and done["derived_features"]["partitions_dropped"]
        assert (await audit.verify(owner)).ok

        # ... and it cannot do what only the owner may
        async with engine.connect() as conn:
            for statement in ("alter table audit_log disable trigger audit_log_append_only",
                              "select vigil_drop_expired_partition('audit_log', now() + interval '1000 days')",
                              "drop table policy_versions"):
                with pytest.raises(sa.exc.DBAPIError, match="must be owner|not a partition of a biometric table"):
                    async with conn.begin_nested():
                        await conn.execute(sa.text(statement))
    finally:
        await engine.dispose()
        await owner.dispose()


def _vigil_backend_run(world, database_url: str, port: int) -> subprocess.Popen:
    env = {**os.environ, "VIGIL_ENVIRONMENT": "production", "VIGIL_SECRET_KEY": "p" * 40, "VIGIL_TOKEN_KEY": "q" * 40,
           "VIGIL_DATABASE_URL": database_url, "VIGIL_MIGRATION_DATABASE_URL": world.settings.database_url,
           "VIGIL_MQTT_URL": world.settings.mqtt_url, "VIGIL_AGENCIES": f'["{world.agency}"]', "VIGIL_HTTP_PORT": str(port),
           "VIGIL_MQTT_CLIENT_ID": "vigil-rt-" + uuid.uuid4().hex[:8]}
    return subprocess.Popen([sys.executable, "-m", "backend.cli", "backend", "run"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_production_refuses_a_superuser_or_an_owner_and_starts_as_the_runtime_role(world, login_role):
    owner_member = login_role("postgres")  # a member of the tables' owner, not a superuser itself
    for url, says in ((world.settings.database_url, "is a superuser"),
                      (_as_role(world.settings.database_url, owner_member), "relations")):
        proc = _vigil_backend_run(world, url, infra.free_port())
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 2, (out, err)
        assert "refused" in err and says in err, err

    port = infra.free_port()
    proc = _vigil_backend_run(world, _as_role(world.settings.database_url, login_role("vigil_api")), port)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()
        assert httpx.get(f"http://127.0.0.1:{port}/api/v1/policy", timeout=5).json()["version"]
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=30)
    assert "privacy start-up failed" not in err, err
