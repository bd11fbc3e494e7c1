"""The telemetry journal: frames on disk before the broker is told they arrived.

The telemetry lane appends each read's verified frames (topic and bytes, as they came) to the
current segment file and fsyncs it before it acknowledges them to the broker (one fsync per
read, shared by reads that arrive meanwhile). From then on a SIGKILL loses nothing: a restarted
backend replays what its segments hold, skipping the frames whose samples were stored
(``raw_stored``, written with the rows: backend/detection/raw.py), before it subscribes again.

Segments roll over every ``segment_s``. A closed segment is deleted once the raw-window writer
has emptied its buffer in a flush that began ``hold_s`` after the segment closed: by then every
frame in it went through detection's reordering and row building (bounded by the backlog and a
hop) and was stored, or was discarded by detection for its own reasons.

One directory per backend identity and database
(``<journal_dir>/<mqtt_client_id>@<database>.telemetry``), owner-only.
A record is a length, a CRC-32 and the read's frames; a torn record at a segment's end (the
process died while writing it, so nothing in it was acknowledged) is ignored.
"""
from __future__ import annotations

import asyncio
import logging
import os
import struct
import time
import zlib
from pathlib import Path
from typing import Callable, Iterator

log = logging.getLogger("vigil.ingest")

_RECORD = struct.Struct("<II")   # body length, crc32 of the body
_COUNT = struct.Struct("<I")
_TOPIC = struct.Struct("<H")
_PAYLOAD = struct.Struct("<I")
_SUFFIX = ".seg"


def encode_batch(messages: list[tuple]) -> bytes:
    """One record's body: the messages' topics and payloads."""
    parts = [_COUNT.pack(len(messages))]
    for topic, payload, *_ in messages:
        t = topic.encode()
        parts += [_TOPIC.pack(len(t)), t, _PAYLOAD.pack(len(payload)), payload]
    return b"".join(parts)


def decode_batch(body: bytes) -> list[tuple[str, bytes, None]]:
    (count,), pos, out = _COUNT.unpack_from(body, 0), _COUNT.size, []
    for _ in range(count):
        (tlen,) = _TOPIC.unpack_from(body, pos)
        pos += _TOPIC.size
        topic = body[pos:pos + tlen].decode()
        pos += tlen
        (plen,) = _PAYLOAD.unpack_from(body, pos)
        pos += _PAYLOAD.size
        out.append((topic, bytes(body[pos:pos + plen]), None))
        pos += plen
    return out


class TelemetryJournal:
    def __init__(self, directory: Path, *, segment_s: float = 2.0, hold_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic, fsync: Callable[[int], None] = os.fsync):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._segment_s = segment_s
        self.hold_s = hold_s
        self._clock = clock
        self._fsync = fsync
        # what a previous run left: replayed at start-up, then released like a segment closed now
        self.leftover = sorted(self.directory.glob(f"*{_SUFFIX}"))
        self._closed: list[tuple[float, Path]] = []  # (monotonic time closed, path), oldest first
        self._next = int(self.leftover[-1].stem) + 1 if self.leftover else 1
        self._fd: int | None = None
        self._path: Path | None = None
        self._opened_at = 0.0
        self._lock = asyncio.Lock()
        self.bytes_written = 0

    # ---- start-up -------------------------------------------------------------------------------

    def replay(self) -> Iterator[list[tuple[str, bytes, None]]]:
        """The batches the previous run left, oldest first. Call once, before any append; the
        segments are then released like one closed now."""
        for path in self.leftover:
            data = path.read_bytes()
            pos = 0
            while pos + _RECORD.size <= len(data):
                length, crc = _RECORD.unpack_from(data, pos)
                body = data[pos + _RECORD.size:pos + _RECORD.size + length]
                if len(body) < length or zlib.crc32(body) != crc:
                    log.error("telemetry journal %s: torn record at byte %d ignored (never acknowledged)", path, pos)
                    break
                yield decode_batch(body)
                pos += _RECORD.size + length
        now = self._clock()
        self._closed = [(now, p) for p in self.leftover] + self._closed
        self.leftover = []

    # ---- appending ------------------------------------------------------------------------------

    async def append(self, messages: list[tuple]) -> None:
        """Write one read's verified frames and return once they are on disk. (The telemetry
        lane reads, handles and acknowledges one read at a time; the lock only keeps a second
        caller from interleaving.)"""
        if not messages:
            return
        async with self._lock:
            now = self._clock()
            if self._fd is None or now - self._opened_at >= self._segment_s:
                self._roll(now)
            body = encode_batch(messages)
            record = _RECORD.pack(len(body), zlib.crc32(body)) + body
            os.write(self._fd, record)
            self.bytes_written += len(record)
            await asyncio.to_thread(self._fsync, self._fd)

    def _roll(self, now: float) -> None:
        """Close the current segment (its records are fsynced: every append waits for that)
        and open the next."""
        if self._fd is not None:
            os.close(self._fd)
            self._closed.append((now, self._path))
        self._path = self.directory / f"{self._next:012d}{_SUFFIX}"
        self._next += 1
        self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._opened_at = now

    # ---- releasing ------------------------------------------------------------------------------

    def release(self, drained_at: float | None) -> int:
        """Delete the closed segments whose frames are all stored: closed ``hold_s`` or more
        before ``drained_at`` (when the raw writer's last emptying flush began). Returns how
        many were deleted."""
        if drained_at is None:
            return 0
        n = 0
        while self._closed and self._closed[0][0] + self.hold_s <= drained_at:
            _, path = self._closed.pop(0)
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            n += 1
        return n

    @property
    def segments(self) -> int:
        """Segments on disk (closed, and the one being written)."""
        return len(self._closed) + len(self.leftover) + (self._fd is not None)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
