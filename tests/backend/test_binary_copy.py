"""The numpy binary COPY encoder against a real PostgreSQL: what goes in comes back."""
import datetime as dt
import uuid

import asyncpg
import numpy as np
import pytest

from backend.detection import binary_copy as B
from backend.detection.raw import RAW_COLUMNS, RAW_KINDS

TABLE = """create temporary table rw (time timestamptz not null, device_id bigint not null, officer_id int,
    rate_hz smallint not null, samples smallint not null, ppg int[] not null, accel_mg smallint[] not null,
    backfill bool not null, held_by_alert uuid)"""


async def _connect(pg_server: str) -> asyncpg.Connection:
    return await asyncpg.connect(pg_server + "/postgres")  # a temporary table: nothing to clean up


async def _copy(conn, rows) -> None:
    data = B.encode(rows, RAW_KINDS)

    async def stream():
        yield data
    await conn.copy_to_table("rw", source=stream(), columns=list(RAW_COLUMNS), format="binary")


class TestEncode:
    async def test_round_trip_through_postgresql(self, pg_server):
        conn = await _connect(pg_server)
        try:
            await conn.execute(TABLE)
            t0 = dt.datetime(2026, 11, 22, 15, 4, 5, 123456, tzinfo=dt.timezone.utc)
            rng = np.random.default_rng(3)
            ppg = rng.integers(0, 2 ** 24, 100).astype(np.int32)
            accel = rng.integers(-16000, 16000, 300).astype(np.int16)
            held = uuid.uuid4()
            rows = [
                (t0, 2 ** 40 + 7, 12, 50, 100, ppg, accel, False, None),
                (t0 - dt.timedelta(days=9000), 8, None, 25, 3, [1, -2, 3], np.array([-32768, 32767, 0]), True, held),
                (t0, 9, 1, 50, 0, np.zeros(0, np.int32), np.zeros(0, np.int16), False, str(held)),
            ]
            await _copy(conn, rows)
            got = await conn.fetch("select * from rw order by device_id")
        finally:
            await conn.close()
        by_id = {r["device_id"]: r for r in got}
        a = by_id[2 ** 40 + 7]
        assert a["time"] == t0 and a["officer_id"] == 12 and a["rate_hz"] == 50 and a["samples"] == 100
        assert a["ppg"] == ppg.tolist() and a["accel_mg"] == accel.tolist()
        assert a["backfill"] is False and a["held_by_alert"] is None
        b = by_id[8]
        assert b["time"] == t0 - dt.timedelta(days=9000) and b["officer_id"] is None
        assert b["ppg"] == [1, -2, 3] and b["accel_mg"] == [-32768, 32767, 0] and b["backfill"] is True
        assert b["held_by_alert"] == held and by_id[9]["held_by_alert"] == held
        assert by_id[9]["ppg"] == [] and by_id[9]["accel_mg"] == []

    @pytest.mark.parametrize("row, message", [
        ((dt.datetime(2026, 1, 1), 1, 1, 50, 1, [1], [1], False, None), "aware"),
        ((dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc), 1, 1, 50, 1, [1], [40000], False, None), "int2"),
        ((dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc), 1, 1, 50, 1, np.array([2 ** 40]), [1], False, None), "int4"),
        ((dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc), 1, 1, 70000, 1, [1], [1], False, None), "int2"),
        ((dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc), 1, 1, 50, 1, [0.5], [1], False, None), "int4"),
        ((1, 2), "2 values for 9 columns"),
    ])
    def test_values_that_do_not_fit_raise_a_typed_error(self, row, message):
        with pytest.raises(B.BinaryCopyError, match=message):
            B.encode([row], RAW_KINDS)

    def test_unknown_kind_lists_the_valid_ones(self):
        with pytest.raises(ValueError, match="valid: int8, int4"):
            B.encode([], ("int8", "varchar"))
