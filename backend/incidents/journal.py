"""The alert journal: every change of an incident is appended to a local file and fsynced
before anyone is told it happened (the device's frame acknowledged to the broker, the event
acknowledged to the wearable), then written to PostgreSQL by the store's writer. A backend
killed while the database was away finds its changes here at start-up and stores them.

One file per backend identity and database (``<journal_dir>/<mqtt_client_id>@<database>.alerts``). A record is a
length, a CRC-32 and the pickled change; a torn record at the end (the process died while
writing it, so nobody was told) is ignored. The file is emptied whenever every change in it is
stored; replaying a change twice is harmless (alert rows are upserted, transitions written once).

The file holds only what the backend wrote itself, in a directory only its user can read
(pickle is safe here for that reason and no other: never point this at a file from elsewhere).
"""
from __future__ import annotations

import asyncio
import logging
import os
import pickle
import struct
import zlib
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger("vigil.alerts")

_HEADER = struct.Struct("<II")  # payload length, crc32 of the payload


class AlertJournal:
    """Append-only, fsynced change log of one backend's alert writes."""

    def __init__(self, path: Path, *, fsync: Callable[[int], None] = os.fsync):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        self._fsync = fsync
        # records written to the file since it was last emptied, and of which known on disk
        # (what a previous run left counts as one: it is on disk, and emptying must remove it)
        self._written = self._synced = 1 if os.fstat(self._fd).st_size else 0
        self._sync_lock = asyncio.Lock()
        self.appending = 0     # appends between their write and their return (the file may not be emptied)

    def read(self) -> list[Any]:
        """Every complete record in the file, oldest first (start-up, before any append)."""
        with open(self.path, "rb") as f:
            data = f.read()
        out, pos = [], 0
        while pos + _HEADER.size <= len(data):
            length, crc = _HEADER.unpack_from(data, pos)
            body = data[pos + _HEADER.size:pos + _HEADER.size + length]
            if len(body) < length or zlib.crc32(body) != crc:
                log.error("alert journal %s: a torn record at byte %d (the process died while writing it); "
                          "%d byte(s) after it ignored", self.path, pos, len(data) - pos)
                break
            out.append(pickle.loads(body))
            pos += _HEADER.size + length
        return out

    async def append(self, change: Any) -> None:
        """Write ``change`` and return once it is on disk. Appends that arrive while an fsync
        runs share the next one."""
        self.appending += 1
        try:
            body = pickle.dumps(change, protocol=pickle.HIGHEST_PROTOCOL)
            os.write(self._fd, _HEADER.pack(len(body), zlib.crc32(body)) + body)
            self._written += 1
            mine = self._written
            async with self._sync_lock:
                if self._synced < mine:
                    upto = self._written
                    await asyncio.to_thread(self._fsync, self._fd)
                    self._synced = max(self._synced, upto)
        finally:
            self.appending -= 1

    def clear(self) -> bool:
        """Empty the file: every change in it is stored. Refused (False) while an append is
        between its write and its return. Not fsynced: if the emptying is lost in a crash the
        changes are stored again, which is harmless."""
        if self.appending:
            return False
        if self._written:
            os.ftruncate(self._fd, 0)
            self._written = self._synced = 0
        return True

    def close(self) -> None:
        os.close(self._fd)
