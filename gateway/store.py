"""Durable store-and-forward for uplink frames: SQLite in WAL mode.

Every frame is written here when it arrives from a wearable and deleted only when the broker
has acknowledged it (PUBACK, QoS 1). So a broker outage, a crash or a SIGKILL loses nothing that
reached the gateway. Frames leave in order: events first, then status and telemetry, each in
arrival order. When the queue is full it drops the oldest telemetry first, then the oldest
status frames, and never an event (events are few; the queue grows past its limit rather than
lose one).
"""
from __future__ import annotations

import json
import logging
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from gateway.exceptions import QueueError

log = logging.getLogger("vigil.gateway.store")

PRIORITY = {"event": 0, "status": 1, "telemetry": 2}
_DROP_ORDER = ("telemetry", "status")  # never "event"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS frames (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- AUTOINCREMENT: ids are never reused, order survives restarts
    priority INTEGER NOT NULL,
    kind TEXT NOT NULL,
    device_id INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    payload BLOB NOT NULL,
    received_at REAL NOT NULL,
    lat REAL,
    lon REAL
);
CREATE INDEX IF NOT EXISTS frames_order ON frames (priority, id);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class QueuedFrame:
    id: int
    kind: str
    device_id: int
    seq: int
    payload: bytes
    received_at: float
    lat: float | None = None
    lon: float | None = None


@dataclass(frozen=True, slots=True)
class IncomingFrame:
    kind: str
    device_id: int
    seq: int
    payload: bytes
    received_at: float
    lat: float | None = None
    lon: float | None = None


class FrameQueue:
    """The on-disk queue. Not thread-safe; used from the gateway's event loop only. Writes are
    small transactions (a commit is a write() to the WAL, no fsync with synchronous=NORMAL), so
    they survive a killed process; only a power loss can take the last ones."""

    def __init__(self, path: Path, max_frames: int):
        self.path = Path(path)
        self.max_frames = max_frames
        self._db: sqlite3.Connection | None = None
        self._depth = 0
        self.dropped = {"telemetry": 0, "status": 0}

    def open(self) -> "FrameQueue":
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
            self._depth = db.execute("SELECT COUNT(*) FROM frames").fetchone()[0]
        except sqlite3.Error as exc:
            raise QueueError(f"cannot open the frame queue {self.path}: {exc}") from exc
        self._db = db
        if self._depth:
            log.info("frame queue %s holds %d frames from before; they go out first", self.path, self._depth)
        return self

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def __enter__(self) -> "FrameQueue":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def depth(self) -> int:
        return self._depth

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise QueueError("the frame queue is not open")
        return self._db

    def put_many(self, frames: list[IncomingFrame]) -> dict[str, int]:
        """Store frames in one transaction; returns what had to be dropped, by kind."""
        if not frames:
            return {}
        db = self._conn()
        rows = [(PRIORITY[f.kind], f.kind, f.device_id, f.seq, f.payload, f.received_at, f.lat, f.lon)
                for f in frames]
        dropped: dict[str, int] = {}
        try:
            db.execute("BEGIN")
            db.executemany("INSERT INTO frames (priority, kind, device_id, seq, payload, received_at, lat, lon)"
                           " VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
            self._depth += len(rows)
            excess = self._depth - self.max_frames
            for kind in _DROP_ORDER:
                if excess <= 0:
                    break
                cur = db.execute("DELETE FROM frames WHERE id IN (SELECT id FROM frames WHERE kind = ?"
                                 " ORDER BY id LIMIT ?)", (kind, excess))
                if cur.rowcount:
                    dropped[kind] = cur.rowcount
                    self.dropped[kind] += cur.rowcount
                    self._depth -= cur.rowcount
                    excess -= cur.rowcount
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            self._depth = db.execute("SELECT COUNT(*) FROM frames").fetchone()[0]
            raise QueueError(f"cannot store frames in {self.path}: {exc}") from exc
        return dropped

    def peek(self, limit: int, lane: str | None = None) -> list[QueuedFrame]:
        """The next frames to send, events first, each class oldest first. ``lane``: "events"
        for events only, "bulk" for status and telemetry only, None for all."""
        where = {"events": " WHERE priority = 0", "bulk": " WHERE priority > 0", None: ""}[lane]
        cur = self._conn().execute(
            "SELECT id, kind, device_id, seq, payload, received_at, lat, lon FROM frames"
            + where + " ORDER BY priority, id LIMIT ?", (limit,))
        return [QueuedFrame(*row) for row in cur.fetchall()]

    def ack(self, ids: list[int]) -> None:
        """The broker has these: forget them."""
        if not ids:
            return
        db = self._conn()
        try:
            db.execute("BEGIN")
            cur = db.executemany("DELETE FROM frames WHERE id = ?", [(i,) for i in ids])
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise QueueError(f"cannot remove sent frames from {self.path}: {exc}") from exc
        self._depth = max(0, self._depth - cur.rowcount)

    def depth_by_kind(self) -> dict[str, int]:
        cur = self._conn().execute("SELECT kind, COUNT(*) FROM frames GROUP BY kind")
        return dict(cur.fetchall())

    # ---- small persistent facts (the last provisioned device list) --------------------------

    def get_meta(self, key: str):
        row = self._conn().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def set_meta(self, key: str, value) -> None:
        self._conn().execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE"
                             " SET value = excluded.value", (key, json.dumps(value)))
