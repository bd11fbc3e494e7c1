"""The privacy side of the running backend: at start-up it installs the shipped policy (or
proposes it with notice when it changed), re-applies the database grants, then keeps two loops:
retention on its schedule and the audit outbox drained into the chain."""
from __future__ import annotations

import asyncio
import datetime as dt
import logging
from pathlib import Path
from typing import Callable

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.app.config import BackendSettings
from backend.privacy import audit, retention
from backend.privacy import store
from backend.privacy.loader import load_policy_file

log = logging.getLogger("vigil.privacy")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


async def apply_grants(engine: AsyncEngine) -> None:
    """Re-apply roles' grants to every table that exists now (other branches' too)."""
    async with engine.begin() as conn:
        await conn.execute(sa.text("select vigil_apply_privacy_grants()"))
        await conn.execute(sa.text("select vigil_install_audit_triggers()"))


async def publish_policy_facts(engine: AsyncEngine, policy) -> None:
    """What the database's own rules need from the policy in force: the small-group threshold
    that ``vigil_group_suppressed`` (migration 0006) applies in the reporting views."""
    async with engine.begin() as conn:
        await conn.execute(sa.text(
            "insert into vigil_meta (key, value) values ('min_group_officers', :n) "
            "on conflict (key) do update set value = excluded.value"), {"n": str(policy.min_group_officers)})


async def install_shipped_policy(engine: AsyncEngine, path: Path, now: dt.datetime) -> store.StoredPolicy:
    """First start: the shipped policy takes effect. Later: a changed file is proposed and
    waits out the notice period; the stored one stays in force until then."""
    policy = load_policy_file(path)
    return await store.propose(engine, policy.text, "system:startup", now)


class PrivacyService:
    def __init__(self, engine: AsyncEngine, settings: BackendSettings, now: Callable[[], dt.datetime] = utcnow):
        self.engine = engine
        self.now = now
        self.policy_file = settings.policy_file
        self.raw_retention_hours = settings.raw_retention_hours
        self.retention_interval_s = settings.retention_interval_s
        self.audit_drain_interval_s = settings.audit_drain_interval_s
        self.audit_anchor_file = settings.audit_anchor_file
        self.policies = store.PolicyStore(engine, load_policy_file(self.policy_file))
        self.ready = asyncio.Event()

    async def start(self) -> None:
        await apply_grants(self.engine)
        await install_shipped_policy(self.engine, self.policy_file, self.now())
        self.policies.invalidate()
        await publish_policy_facts(self.engine, (await self.policies.current(self.now())).policy)
        self.ready.set()

    async def run_retention_once(self) -> dict:
        now = self.now()
        current = await self.policies.current(now)
        await publish_policy_facts(self.engine, current.policy)  # a pending version may have come into force
        report = await retention.run_retention(self.engine, current.policy, now, self.raw_retention_hours)
        if self.audit_anchor_file:
            await audit.write_anchor(self.engine, self.audit_anchor_file)
        return report

    async def run(self) -> None:
        """Start-up, then retention and the audit outbox until cancelled; database outages
        are waited out (logged once) rather than ending the backend."""
        delay = 1.0
        while not self.ready.is_set():
            try:
                await self.start()
            except (sa.exc.SQLAlchemyError, OSError, asyncio.TimeoutError) as exc:
                reason = str(getattr(exc, "orig", None) or exc).strip().splitlines() or [""]
                log.error("privacy start-up failed (%s: %s); retrying in %.0f s", exc.__class__.__name__, reason[0], delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._every(self.retention_interval_s, self.run_retention_once, "retention"), name="retention")
            tg.create_task(self._every(self.audit_drain_interval_s, lambda: audit.drain_outbox(self.engine), "audit outbox"),
                           name="audit-outbox")

    async def _every(self, interval_s: float, job, what: str) -> None:
        failing = False
        while True:
            try:
                await job()
                if failing:
                    log.warning("%s recovered", what)
                failing = False
            except (sa.exc.SQLAlchemyError, OSError, asyncio.TimeoutError) as exc:
                if not failing:
                    log.error("%s failed (%s); retrying", what, exc.__class__.__name__)
                failing = True
            await asyncio.sleep(interval_s)
