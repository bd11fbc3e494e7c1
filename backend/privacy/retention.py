"""Retention: raw waveforms at most 24 h (the policy may say less), derived features at most
30 days, except data inside an incident's span, which lives as long as the incident record.

Run by the backend on a schedule (backend/privacy/service.py) with the clock passed in. Whole
time partitions (native partitions or TimescaleDB chunks) that are expired and hold nothing
held are dropped; the rest is deleted row by row. Every run's deletions are counted per data
class and audited in the same transaction as the deletion.

TimescaleDB's add_retention_policy is deliberately not used: it drops whole chunks and cannot
spare the windows held for an incident; this job drops the chunks that hold none."""
from __future__ import annotations

import datetime as dt
import logging
import re
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from backend.privacy import audit
from backend.privacy.loader import Policy

log = logging.getLogger("vigil.retention")

_TIME_COLUMNS = ("time", "start", "starts_at", "start_time", "window_start", "started_at", "t0", "created_at")
_BOUND = re.compile(r"FROM \('([^']+)'\) TO \('([^']+)'\)")


@dataclass(frozen=True, slots=True)
class TableShape:
    table: str
    time_col: str
    device_col: str | None
    officer_col: str | None
    held_col: str | None
    held_type: str | None
    has_raw_holds: bool = False


async def table_shape(conn: AsyncConnection, table: str) -> TableShape | None:
    """Columns of a biometric table found from the catalogue (raw_windows is another branch's)."""
    rows = (await conn.execute(sa.text(
        "select column_name, data_type from information_schema.columns where table_schema = 'public' and table_name = :t"
    ), {"t": table})).all()
    if not rows:
        return None
    cols = {r.column_name: r.data_type for r in rows}
    time_col = next((c for c in _TIME_COLUMNS if c in cols and "timestamp" in cols[c]), None)
    if time_col is None:
        return None
    held = next((c for c in cols if "held" in c or "hold" in c), None)
    holds = (await conn.execute(sa.text("select to_regclass('public.raw_holds') is not null"))).scalar_one()
    return TableShape(table, time_col, "device_id" if "device_id" in cols else None,
                      "officer_id" if "officer_id" in cols else None, held, cols.get(held) if held else None,
                      bool(holds) and table == "raw_windows")


def held_condition(shape: TableShape, alias: str) -> str:
    """SQL true for a row inside an incident's span (or marked held by detection)."""
    parts = []
    if shape.held_col:
        col = f'{alias}."{shape.held_col}"'
        if shape.held_type == "boolean":
            parts.append(f"coalesce({col}, false)")
        elif shape.held_type and "timestamp" in shape.held_type:
            parts.append(f"coalesce({col} > :now, false)")
        elif shape.held_type == "uuid":
            # held for an alert: as long as that incident record exists
            parts.append(f"exists (select 1 from alerts ah where ah.id = {col})")
        else:
            parts.append(f"{col} is not null")
    if shape.has_raw_holds and shape.device_col:
        t = f'{alias}."{shape.time_col}"'
        parts.append(f"exists (select 1 from raw_holds h join alerts ah on ah.id = h.alert_id where h.device_id = {alias}.device_id"
                     f" and {t} >= h.start and {t} < h.until)")
    match = [f"a.device_id = {alias}.device_id" if shape.device_col else None,
             f"a.officer_id = {alias}.officer_id" if shape.officer_col else None]
    match = [m for m in match if m]
    if match:
        t = f'{alias}."{shape.time_col}"'
        parts.append(
            f"exists (select 1 from alerts a where ({' or '.join(match)})"
            f" and {t} >= a.raised_at - make_interval(secs => :lead)"
            f" and {t} <= (case when a.state = any(:closed_states) then a.updated_at else :now end) + make_interval(secs => :after))"
        )
    return "(" + " or ".join(parts) + ")" if parts else "false"


async def _partitions(conn: AsyncConnection, table: str, mode: str) -> list[tuple[str, dt.datetime, dt.datetime]]:
    if mode == "timescaledb":
        rows = (await conn.execute(sa.text(
            "select format('%I.%I', chunk_schema, chunk_name) as name, range_start, range_end "
            "from timescaledb_information.chunks where hypertable_name = :t"), {"t": table})).all()
        return [(r.name, r.range_start, r.range_end) for r in rows]
    rows = (await conn.execute(sa.text(
        "select c.oid::regclass::text as name, pg_get_expr(c.relpartbound, c.oid) as bound "
        "from pg_inherits i join pg_class c on c.oid = i.inhrelid where i.inhparent = to_regclass(:t)"), {"t": table})).all()
    out = []
    for r in rows:
        m = _BOUND.search(r.bound or "")
        if m:
            out.append((r.name, dt.datetime.fromisoformat(m.group(1)), dt.datetime.fromisoformat(m.group(2))))
    return out


# pg_advisory_xact_lock key serialising retention passes (an arbitrary constant of ours).
RETENTION_LOCK = 0x5649_4731


async def expire_table(conn: AsyncConnection, shape: TableShape, cutoff: dt.datetime, params: dict, mode: str) -> dict:
    """Delete rows of one table older than ``cutoff`` that are not held. Returns counts."""
    held = held_condition(shape, "x")
    t = f'"{shape.time_col}"'
    dropped, deleted = [], 0
    for name, lo, hi in await _partitions(conn, shape.table, mode):
        lo, hi = (b if b.tzinfo else b.replace(tzinfo=dt.timezone.utc) for b in (lo, hi))
        if hi > cutoff:
            continue
        # Counted through the parent: the runtime role holds grants on the table, not on each partition.
        held_rows, rows = (await conn.execute(sa.text(
            f'select count(*) filter (where {held}), count(*) from "{shape.table}" x where x.{t} >= :lo and x.{t} < :hi'),
            {**params, "lo": lo, "hi": hi})).one()
        if held_rows:
            continue  # the row-level delete below spares the held rows
        # Dropping needs the owner: migration 0006's functions do it, for biometric partitions only.
        if mode == "timescaledb":
            # typed: asyncpg sends untyped parameters
            await conn.execute(sa.text("select vigil_drop_biometric_chunks(cast(:t as regclass), cast(:hi as timestamptz), "
                                       "cast(:lo as timestamptz))"), {"t": shape.table, "hi": hi, "lo": lo})
        else:
            await conn.execute(sa.text("select vigil_drop_expired_partition(cast(:p as regclass), cast(:hi as timestamptz))"),
                               {"p": name, "hi": hi})
        dropped.append(name)
        deleted += rows
    result = await conn.execute(sa.text(f'delete from "{shape.table}" x where x.{t} < :cutoff and not {held}'), {**params, "cutoff": cutoff})
    deleted += result.rowcount or 0
    kept = (await conn.execute(sa.text(f'select count(*) from "{shape.table}" x where x.{t} < :cutoff'), {"cutoff": cutoff})).scalar_one()
    return {"rows_deleted": deleted, "partitions_dropped": dropped, "held_rows_kept": kept, "cutoff": cutoff.isoformat()}


async def run_retention(engine: AsyncEngine, policy: Policy, now: dt.datetime,
                        raw_max_age_hours: float | None = None) -> dict[str, dict]:
    """One retention pass at ``now``: returns {data class: counts}; each class audited."""
    params = {"now": now, "lead": policy.incident_lead_s, "after": policy.incident_hold_after_s,
              "closed_states": sorted(policy.closed_incident_states)}
    report: dict[str, dict] = {}
    async with engine.begin() as conn:
        mode = (await conn.execute(sa.text("select value from vigil_meta where key = 'storage_mode'"))).scalar_one_or_none() or "native_partitioning"
    for name, dc in policy.data_classes.items():
        if not dc.biometric or dc.max_age_hours is None:
            continue
        hours = dc.max_age_hours
        if name == "raw_waveforms" and raw_max_age_hours is not None:
            hours = min(hours, raw_max_age_hours)  # configurable down, never up
        cutoff = now - dt.timedelta(hours=hours)
        counts = {"rows_deleted": 0, "partitions_dropped": [], "held_rows_kept": 0, "cutoff": cutoff.isoformat(), "tables": []}
        async with engine.begin() as conn:
            # one pass at a time per database (two backends, or `vigil privacy retention` beside
            # the service): both would hold the parent tables shared and wait to drop from them
            await conn.execute(sa.text("select pg_advisory_xact_lock(:key)"), {"key": RETENTION_LOCK})
            for table in dc.tables:
                shape = await table_shape(conn, table)
                if shape is None:
                    continue
                one = await expire_table(conn, shape, cutoff, params, mode)
                counts["rows_deleted"] += one["rows_deleted"]
                counts["partitions_dropped"] += one["partitions_dropped"]
                counts["held_rows_kept"] += one["held_rows_kept"]
                counts["tables"].append(table)
            if counts["rows_deleted"] or counts["partitions_dropped"]:
                await audit.record(conn, "system:retention", "retention.delete", f"data_class:{name}", "", "done",
                                   {**counts, "max_age_hours": hours, "policy": policy.version, "run_at": now.isoformat()},
                                   agency_id=audit.DEPLOYMENT)
        if counts["rows_deleted"]:
            log.info("retention: %d %s rows deleted (cutoff %s, %d held kept)", counts["rows_deleted"], name, cutoff, counts["held_rows_kept"])
        report[name] = counts
    return report
