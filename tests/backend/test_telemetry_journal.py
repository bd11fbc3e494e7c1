"""The telemetry journal (backend/ingest/journal.py): frames on disk before acknowledged, read
back after the process, deleted only once their rows must be stored."""
from __future__ import annotations

import asyncio
import os

from backend.ingest.journal import TelemetryJournal


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def _msgs(n, start=0):
    return [(f"vigil/a/gw/g/up/{i}/telemetry", bytes([i % 256]) * (10 + i), {"lat": "1"}) for i in range(start, start + n)]


def test_what_was_appended_is_read_back_by_the_next_process_and_a_torn_tail_ignored(tmp_path):
    synced = []
    journal = TelemetryJournal(tmp_path, fsync=lambda fd: (os.fsync(fd), synced.append(fd)))
    asyncio.run(journal.append(_msgs(3)))
    asyncio.run(journal.append(_msgs(2, 3)))
    assert len(synced) == 2  # one fsync per read, before append returns
    journal.close()
    segment = sorted(tmp_path.glob("*.seg"))[-1]
    with open(segment, "ab") as f:
        f.write(b"\xff\x00\x00\x00\x01\x02")  # the crash cut a write short: never acknowledged
    again = TelemetryJournal(tmp_path)
    batches = list(again.replay())
    assert [[(t, p) for t, p, _ in b] for b in batches] == [[(t, p) for t, p, _ in _msgs(3)], [(t, p) for t, p, _ in _msgs(2, 3)]]


def test_a_segment_goes_only_after_the_writer_drained_hold_s_after_it_closed(tmp_path):
    clock = Clock()
    journal = TelemetryJournal(tmp_path, segment_s=2.0, hold_s=30.0, clock=clock)
    asyncio.run(journal.append(_msgs(1)))
    clock.t += 2.5
    asyncio.run(journal.append(_msgs(1)))  # rolls: the first segment closed at 102.5
    assert len(list(tmp_path.glob("*.seg"))) == 2
    assert journal.release(None) == 0                 # the writer never drained
    assert journal.release(102.5 + 29.9) == 0         # drained, but too soon after the close
    assert journal.release(102.5 + 30.0) == 1
    assert len(list(tmp_path.glob("*.seg"))) == 1     # the open segment stays


def test_segments_a_crash_left_are_released_like_one_closed_at_start_up(tmp_path):
    clock = Clock()
    first = TelemetryJournal(tmp_path, clock=clock)
    asyncio.run(first.append(_msgs(2)))
    first.close()
    clock.t = 500.0
    second = TelemetryJournal(tmp_path, clock=clock, hold_s=30.0)
    assert len(list(second.replay())) == 1
    assert second.release(529.0) == 0 and second.release(530.0) == 1
    assert not list(tmp_path.glob("*.seg"))
