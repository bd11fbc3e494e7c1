"""Policy versions in the database, each with the moment it takes effect.

The first policy of a deployment takes effect at once; every later one only after the notice
period of the policy in force when it was proposed. Proposals are audited; rows are append-only
(a trigger refuses UPDATE and DELETE), so the history of what was in force when stays readable."""
from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.db.schema import policy_versions
from backend.privacy import audit
from backend.privacy.loader import Policy, load_policy_file, parse_policy

# How long a process trusts its cached list of versions before re-reading it.
CACHE_TTL_S = 5.0


@dataclass(frozen=True, slots=True)
class StoredPolicy:
    policy: Policy
    proposed_at: dt.datetime
    effective_at: dt.datetime
    proposed_by: str

    def public(self) -> dict:
        return {"version": self.policy.version, "sha256": self.policy.sha256,
                "effective_at": self.effective_at.isoformat(), "proposed_at": self.proposed_at.isoformat(),
                "proposed_by": self.proposed_by}


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


async def load_versions(engine: AsyncEngine) -> list[StoredPolicy]:
    async with engine.connect() as conn:
        rows = (await conn.execute(sa.select(policy_versions).order_by(policy_versions.c.effective_at))).mappings().all()
    return [StoredPolicy(parse_policy(r["document"]), r["proposed_at"], r["effective_at"], r["proposed_by"]) for r in rows]


def effective(versions: list[StoredPolicy], now: dt.datetime) -> StoredPolicy | None:
    """The latest version whose effective time has come."""
    live = [v for v in versions if v.effective_at <= now]
    return max(live, key=lambda v: (v.effective_at, v.proposed_at)) if live else None


async def propose(engine: AsyncEngine, text: str, actor: str, now: dt.datetime | None = None,
                  notice_days: float | None = None) -> StoredPolicy:
    """Store a new policy document, effective after the notice period of the policy in force
    (or later, if ``notice_days`` asks for more; never sooner). Audited."""
    policy = parse_policy(text)
    now = now or _utcnow()
    versions = await load_versions(engine)
    for v in versions:
        if v.policy.sha256 == policy.sha256:
            return v
    current = effective(versions, now)
    if current is None and not versions:
        notice = 0.0  # the first policy of a deployment: there is nothing to give notice of
    else:
        base = current.policy.change_notice_days if current else max(v.policy.change_notice_days for v in versions)
        notice = max(base, notice_days or 0.0)
    stored = StoredPolicy(policy, now, now + dt.timedelta(days=notice), actor)
    async with engine.begin() as conn:
        await conn.execute(sa.insert(policy_versions).values(
            sha256=policy.sha256, version=policy.version, document=policy.text,
            proposed_at=stored.proposed_at, effective_at=stored.effective_at, proposed_by=actor))
        await audit.record(conn, actor, "policy.install" if notice == 0 and not versions else "policy.propose",
                           f"policy:{policy.version}", "oversight_audit", "done",
                           {"sha256": policy.sha256, "effective_at": stored.effective_at.isoformat(),
                            "notice_days": notice, "replaces": current.policy.sha256 if current else None},
                           agency_id=audit.DEPLOYMENT)
    return stored


class PolicyStore:
    """The policy in force at a given moment, from the database (cached briefly); the shipped
    document stands in until the database has one."""

    def __init__(self, engine: AsyncEngine, fallback: Policy | None = None):
        self._engine = engine
        self._fallback = fallback or load_policy_file()
        self._versions: list[StoredPolicy] = []
        self._loaded_at = -1e9

    def invalidate(self) -> None:
        self._loaded_at = -1e9

    async def versions(self) -> list[StoredPolicy]:
        if time.monotonic() - self._loaded_at > CACHE_TTL_S:
            self._versions = await load_versions(self._engine)
            self._loaded_at = time.monotonic()
        return self._versions

    async def current(self, now: dt.datetime) -> StoredPolicy:
        found = effective(await self.versions(), now)
        if found is None:
            return StoredPolicy(self._fallback, now, now, "shipped")
        return found

    async def pending(self, now: dt.datetime) -> list[StoredPolicy]:
        return [v for v in await self.versions() if v.effective_at > now]
