"""PostgreSQL's binary COPY format, written with numpy for rows that carry sample arrays.

asyncpg's ``copy_records_to_table`` checks and encodes every array element in a loop: 80 us
per raw-window row (100 PPG + 300 accelerometer values), the largest single cost of the
backend's event loop at 3,000 devices. Here a row's fixed columns are packed with one
``struct`` call and each array is laid out by numpy in one go (5-6 us per row).

Format (PostgreSQL docs, "COPY", binary format): a signature and two int32 (flags, header
extension length); per row an int16 field count, then per field an int32 byte length (-1 for
NULL) and the value in the type's binary send format, big-endian; an int16 -1 trailer. An
array value is: int32 dimensions (1), int32 has-nulls (0), int32 element type OID, int32 length,
int32 lower bound (1), then per element an int32 length and the element.
"""
from __future__ import annotations

import datetime as dt
import struct
import uuid
from collections.abc import Iterable, Sequence

import numpy as np

SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
TRAILER = struct.pack(">h", -1)
_PG_EPOCH = dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)
_NULL = struct.pack(">i", -1)

# column kind -> (struct code of the value, its byte length); arrays are handled apart
_SCALARS = {"int8": ("q", 8), "int4": ("i", 4), "int2": ("h", 2), "bool": ("?", 1), "float8": ("d", 8)}
# array kind -> (element OID, numpy big-endian element type, (length, element) cell type)
_ARRAYS = {kind: (oid, np.dtype(code), np.dtype([("len", ">i4"), ("value", code)]))
           for kind, oid, code in (("int4[]", 23, ">i4"), ("int2[]", 21, ">i2"))}
KINDS = (*_SCALARS, *_ARRAYS, "timestamptz", "uuid")


class BinaryCopyError(ValueError):
    """A value does not fit its column (out of range, wrong type): the batch is not sent."""


def _array(values: np.ndarray, kind: str) -> bytes:
    oid, etype, cell = _ARRAYS[kind]
    v = np.asarray(values).reshape(-1)
    if v.size and not np.can_cast(v.dtype, etype, "safe"):  # only then can a value not fit
        info = np.iinfo(etype)
        if v.dtype.kind not in "iu" or v.min() < info.min or v.max() > info.max:
            raise BinaryCopyError(f"{kind} needs integers in [{info.min}, {info.max}]")
    cells = np.empty(v.size, dtype=cell)
    cells["len"] = etype.itemsize
    cells["value"] = v
    body = struct.pack(">iiiii", 1, 0, oid, v.size, 1) + cells.tobytes()
    return struct.pack(">i", len(body)) + body


def _scalar(value, kind: str) -> bytes:
    if value is None:
        return _NULL
    if kind == "timestamptz":
        if value.tzinfo is None:
            raise BinaryCopyError("timestamptz needs an aware datetime")
        delta = value - _PG_EPOCH
        return struct.pack(">iq", 8, (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds)
    if kind == "uuid":
        return struct.pack(">i", 16) + (value.bytes if isinstance(value, uuid.UUID) else uuid.UUID(str(value)).bytes)
    if kind in _ARRAYS:
        return _array(value, kind)
    code, size = _SCALARS[kind]
    try:
        return struct.pack(">i" + code, size, value)
    except struct.error as exc:
        raise BinaryCopyError(f"{kind}: {exc}") from exc


def encode(rows: Iterable[Sequence], kinds: Sequence[str]) -> bytes:
    """The whole COPY stream (signature, rows, trailer) for ``rows`` whose columns have ``kinds``.

    >>> data = encode([(7, None, [1, 2])], ("int8", "int4", "int4[]"))
    >>> data[:11] == b"PGCOPY\\n\\xff\\r\\n\\x00" and data[-2:] == b"\\xff\\xff"
    True
    """
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ValueError(f"unknown column kinds {unknown}; valid: {', '.join(KINDS)}")
    count = struct.pack(">h", len(kinds))
    parts = [SIGNATURE]
    for row in rows:
        if len(row) != len(kinds):
            raise BinaryCopyError(f"a row of {len(row)} values for {len(kinds)} columns")
        parts.append(count)
        parts.extend(_scalar(value, kind) for value, kind in zip(row, kinds))
    parts.append(TRAILER)
    return b"".join(parts)
