# Preallocated ring buffers that overwrite the oldest entry when full, and say so.
#
# Pure logic, MicroPython and CPython. The telemetry outbox (RecordRing) holds at least five
# minutes of sample blocks while the link is down; IntRing holds the few samples that wait
# between a sensor FIFO read and the block they go into.
from array import array


class RecordRing:
    """Fixed-length byte records in one bytearray allocated at start-up.

    push() copies a record in; when the ring is full the oldest record is overwritten and
    ``overwritten`` counts it, so the loss is reported instead of hidden. peek(i) returns a
    memoryview into the ring (valid until the next push); pop() drops the oldest record."""

    def __init__(self, record_len: int, capacity: int) -> None:
        if record_len < 1 or capacity < 2:
            raise ValueError("record_len >= 1 and capacity >= 2")
        self.record_len = record_len
        self.capacity = capacity
        self._buf = bytearray(record_len * capacity)
        self._mv = memoryview(self._buf)
        self._head = 0  # index of the oldest record
        self._count = 0
        self.overwritten = 0  # records lost to overflow since start-up

    def __len__(self) -> int:
        return self._count

    def is_full(self) -> bool:
        return self._count == self.capacity

    def push(self, record) -> bool:
        """Append a record (exactly record_len bytes). Returns True when the oldest was lost."""
        n = self.record_len
        if len(record) != n:
            raise ValueError("record of %d bytes, ring holds %d" % (len(record), n))
        lost = self._count == self.capacity
        if lost:
            self._head = (self._head + 1) % self.capacity
            self._count -= 1
            self.overwritten += 1
        slot = (self._head + self._count) % self.capacity
        self._mv[slot * n:(slot + 1) * n] = record
        self._count += 1
        return lost

    def peek(self, i: int = 0) -> memoryview:
        """The i-th oldest record, as a view into the ring (no copy)."""
        if not 0 <= i < self._count:
            raise IndexError("ring index")
        slot = (self._head + i) % self.capacity
        n = self.record_len
        return self._mv[slot * n:(slot + 1) * n]

    def pop(self) -> None:
        """Drop the oldest record (after it was delivered)."""
        if self._count == 0:
            raise IndexError("pop from an empty ring")
        self._head = (self._head + 1) % self.capacity
        self._count -= 1

    def clear(self) -> None:
        self._head = 0
        self._count = 0


class IntRing:
    """Entries of ``width`` signed integers each, in one preallocated array; overwrites the
    oldest entry when full and counts it in ``overwritten``."""

    def __init__(self, width: int, capacity: int) -> None:
        if width < 1 or capacity < 2:
            raise ValueError("width >= 1 and capacity >= 2")
        self.width = width
        self.capacity = capacity
        self._data = array("i", bytes(4 * width * capacity))
        self._head = 0
        self._count = 0
        self.overwritten = 0

    def __len__(self) -> int:
        return self._count

    def push(self, a: int, b: int = 0, c: int = 0) -> bool:
        lost = self._count == self.capacity
        if lost:
            self._head = (self._head + 1) % self.capacity
            self._count -= 1
            self.overwritten += 1
        pos = ((self._head + self._count) % self.capacity) * self.width
        d = self._data
        d[pos] = a
        if self.width > 1:
            d[pos + 1] = b
        if self.width > 2:
            d[pos + 2] = c
        self._count += 1
        return lost

    def get(self, i: int, field: int = 0) -> int:
        if not 0 <= i < self._count:
            raise IndexError("ring index")
        return self._data[((self._head + i) % self.capacity) * self.width + field]

    def drop(self, n: int = 1) -> None:
        """Drop the n oldest entries."""
        if n > self._count:
            raise IndexError("drop more than held")
        self._head = (self._head + n) % self.capacity
        self._count -= n

    def clear(self) -> None:
        self._head = 0
        self._count = 0
