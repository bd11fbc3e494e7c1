"""The tamper-evident audit log: every access, refusal, policy change, alert transition,
provisioning action and retention deletion, as a hash chain in PostgreSQL.

Entry n stores hash_n = SHA-256(hash_{n-1} || canonical JSON of entry n), with a gap-free
sequence number. Editing, deleting or reordering an entry breaks the chain at that entry, and
``verify`` says which. Truncating the newest entries is caught only against an anchor (the head
hash written somewhere the database administrator cannot rewrite: ``vigil audit anchor``).

Other parts of the backend call :func:`record`. Database-level events (alert transitions,
device provisioning) reach the chain through ``audit_outbox`` rows written by triggers
(migration 0004_privacy) and drained by :func:`drain_outbox`."""
from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from backend.db.schema import audit_log, audit_outbox

GENESIS = "0" * 64
# Serialises writers so the chain has one head; any constant distinct from other advisory locks.
_CHAIN_LOCK = 0x56494731  # "VIG1"

OUTCOMES = ("granted", "refused", "done", "failed")
# The agency_id of entries about the whole deployment (policy versions, retention runs): every
# agency's auditors see them (GET /api/v1/audit), since they change what happens to every agency's data.
DEPLOYMENT = "*"


def _utc(at: dt.datetime) -> dt.datetime:
    return at.astimezone(dt.timezone.utc) if at.tzinfo else at.replace(tzinfo=dt.timezone.utc)


def canonical(entry: dict) -> bytes:
    """The bytes an entry's hash covers: sorted keys, no spaces, UTC microsecond timestamps."""
    body = {
        "seq": int(entry["seq"]),
        "at": _utc(entry["at"]).isoformat(timespec="microseconds"),
        "actor": entry["actor"], "action": entry["action"], "subject": entry["subject"] or "",
        "purpose": entry["purpose"] or "", "outcome": entry["outcome"], "agency_id": entry.get("agency_id"),
        "details": entry["details"],
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def entry_hash(prev_hash: str, entry: dict) -> str:
    return hashlib.sha256(prev_hash.encode() + canonical(entry)).hexdigest()


def _json_safe(details: dict | None) -> dict:
    # Round-trip so the hashed form equals what JSONB gives back when verifying.
    return json.loads(json.dumps(details or {}, default=str, sort_keys=True))


async def record(engine_or_conn: AsyncEngine | AsyncConnection, actor: str, action: str, subject: str = "",
                 purpose: str = "", outcome: str = "done", details: dict | None = None, *,
                 agency_id: str | None = None, at: dt.datetime | None = None) -> int:
    """Append one entry to the chain and return its sequence number.

    Pass a connection to make the entry part of your transaction (it commits or rolls back
    with your change); pass the engine for a transaction of its own. ``actor`` is who did it
    ("user:<sub>", "device:<id>", "system:retention"), ``subject`` whom or what it concerns
    ("officer:17", "alert:<uuid>", "policy:<version>")."""
    if isinstance(engine_or_conn, AsyncEngine):
        async with engine_or_conn.begin() as conn:
            return await _append(conn, actor, action, subject, purpose, outcome, details, agency_id, at)
    return await _append(engine_or_conn, actor, action, subject, purpose, outcome, details, agency_id, at)


async def _append(conn: AsyncConnection, actor, action, subject, purpose, outcome, details, agency_id, at) -> int:
    await conn.execute(sa.text("select pg_advisory_xact_lock(:k)"), {"k": _CHAIN_LOCK})
    head = (await conn.execute(sa.select(audit_log.c.seq, audit_log.c.hash).order_by(audit_log.c.seq.desc()).limit(1))).first()
    seq, prev = (head.seq + 1, head.hash) if head else (1, GENESIS)
    at = _utc(at) if at else (await conn.execute(sa.text("select clock_timestamp()"))).scalar_one()
    at = at.replace(microsecond=at.microsecond)  # timestamptz keeps microseconds exactly
    entry = {"seq": seq, "at": at, "actor": actor, "action": action, "subject": subject or "", "purpose": purpose or "",
             "outcome": outcome, "agency_id": agency_id, "details": _json_safe(details)}
    await conn.execute(sa.insert(audit_log).values(**entry, prev_hash=prev, hash=entry_hash(prev, entry)))
    return seq


async def drain_outbox(engine: AsyncEngine, limit: int = 1000) -> int:
    """Move events written by database triggers into the chain, in the order they happened."""
    async with engine.begin() as conn:
        rows = (await conn.execute(
            sa.select(audit_outbox).order_by(audit_outbox.c.id).limit(limit).with_for_update(skip_locked=True)
        )).mappings().all()
        for r in rows:
            await _append(conn, r["actor"], r["action"], r["subject"], r["purpose"], r["outcome"],
                          dict(r["details"], outbox_at=_utc(r["at"]).isoformat()), r["agency_id"], None)
        if rows:
            await conn.execute(sa.delete(audit_outbox).where(audit_outbox.c.id.in_([r["id"] for r in rows])))
    return len(rows)


# Data classes of the officer's body: a read of one of these about an incident is who saw what and why.
BIOMETRIC_READS = ("alert_evidence", "derived_features", "raw_waveforms")


# Entries about an incident are written after it was raised; this much earlier is still read, for
# a database clock behind the backend's (the incident's time is the backend's, an entry's the database's).
INCIDENT_CLOCK_MARGIN = dt.timedelta(minutes=10)


async def incident_entries(conn: AsyncConnection, alert_id: str, agency_id: str, raised_at: dt.datetime, *,
                           biometric_reads_only: bool = False) -> list[dict]:
    """The entries of one agency about one incident, oldest first: its transitions (subject
    ``alert:<id>``), reads of its record and evidence (``details.alert``, ``details.alerts``), and
    reads of the officer's vitals its open span granted (``details.incidents``). Only entries
    since the incident was raised are looked at (index ``audit_log_at``)."""
    d = audit_log.c.details
    about = sa.or_(audit_log.c.subject == f"alert:{alert_id}", d["alert"].astext == alert_id,
                   d["alerts"].has_key(alert_id), d["incidents"].has_key(alert_id))  # noqa: W601 (JSONB ?)
    q = (sa.select(audit_log)
         .where(audit_log.c.at >= _utc(raised_at) - INCIDENT_CLOCK_MARGIN, audit_log.c.agency_id == agency_id, about)
         .order_by(audit_log.c.seq))
    if biometric_reads_only:
        q = q.where(audit_log.c.action == "access", d["data_class"].astext.in_(BIOMETRIC_READS))
    return [{**dict(r), "at": r["at"].isoformat()} for r in (await conn.execute(q)).mappings().all()]


@dataclass(slots=True)
class Verification:
    entries: int = 0
    head_seq: int = 0
    head_hash: str = GENESIS
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_rows(rows: list[dict], anchor: dict | None = None) -> Verification:
    """Check a chain read in ``seq`` order. Each problem names the entry and what happened:
    edited (content no longer matches its hash), deleted (a sequence number is missing or a
    link points past it), reordered (an entry's link points at a later entry)."""
    result = Verification(entries=len(rows))
    by_hash = {r["hash"]: r for r in rows}
    prev_hash, prev_seq = GENESIS, 0
    for r in rows:
        seq = r["seq"]
        if seq != prev_seq + 1:
            if seq > prev_seq + 1:
                missing = f"{prev_seq + 1}" if seq == prev_seq + 2 else f"{prev_seq + 1}..{seq - 1}"
                result.problems.append(f"entry {missing}: deleted (sequence jumps from {prev_seq} to {seq})")
            else:
                result.problems.append(f"entry {seq}: reordered (sequence number repeats or goes back after {prev_seq})")
        content_ok = entry_hash(r["prev_hash"], r) == r["hash"]
        if not content_ok:
            result.problems.append(f"entry {seq}: edited (its content no longer matches its hash)")
        if r["prev_hash"] != prev_hash:
            linked = by_hash.get(r["prev_hash"])
            if linked is not None and linked["seq"] > seq:
                result.problems.append(f"entry {seq}: reordered (it was written after entry {linked['seq']})")
            elif linked is not None and content_ok:
                result.problems.append(f"entry {seq}: preceded by a deleted entry (it links to entry {linked['seq']}, not {prev_seq})")
            elif linked is None and content_ok and seq == prev_seq + 1:
                result.problems.append(f"entry {seq - 1 if seq > 1 else seq}: edited or replaced (entry {seq} links to a hash no entry has)")
        prev_hash, prev_seq = r["hash"], seq
    result.head_seq, result.head_hash = prev_seq, prev_hash
    if anchor and int(anchor.get("seq", 0)) > 0:
        a_seq, a_hash = int(anchor["seq"]), anchor["hash"]
        row = next((r for r in rows if r["seq"] == a_seq), None)
        if row is None:
            result.problems.append(f"entry {a_seq}: deleted (the anchor names it as a past head; the log now ends at {prev_seq})")
        elif row["hash"] != a_hash:
            result.problems.append(f"entry {a_seq}: edited or rewritten (its hash differs from the anchor)")
    # One edit shows up twice (own hash, next link); keep the messages unique, in order.
    result.problems = list(dict.fromkeys(result.problems))
    return result


async def read_chain(engine: AsyncEngine) -> list[dict]:
    async with engine.connect() as conn:
        rows = (await conn.execute(sa.select(audit_log).order_by(audit_log.c.seq))).mappings().all()
    return [dict(r) for r in rows]


async def verify(engine: AsyncEngine, anchor_file: Path | None = None) -> Verification:
    anchor = json.loads(Path(anchor_file).read_text()) if anchor_file and Path(anchor_file).exists() else None
    return verify_rows(await read_chain(engine), anchor)


async def write_anchor(engine: AsyncEngine, anchor_file: Path) -> dict:
    """Write the head (seq, hash) to a file, to be kept outside the database's reach."""
    rows = await read_chain(engine)
    head = {"seq": rows[-1]["seq"], "hash": rows[-1]["hash"]} if rows else {"seq": 0, "hash": GENESIS}
    head["written_at"] = dt.datetime.now(dt.timezone.utc).isoformat()
    Path(anchor_file).write_text(json.dumps(head, indent=2) + "\n")
    return head
