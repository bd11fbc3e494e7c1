"""The preallocated ring buffers: overflow keeps the newest, counts the loss, drains
oldest-first."""
from firmware.ringbuf import IntRing, RecordRing
from fw_portable_helpers import raises


def _rec(i):
    return bytes([i & 0xFF, (i >> 8) & 0xFF, 0xAA, 0x55])


def test_record_ring_keeps_order_until_full():
    r = RecordRing(4, 5)
    for i in range(3):
        assert r.push(_rec(i)) is False
    assert len(r) == 3 and not r.is_full()
    assert bytes(r.peek(0)) == _rec(0) and bytes(r.peek(2)) == _rec(2)
    r.pop()
    assert bytes(r.peek(0)) == _rec(1)


def test_record_ring_overflow_overwrites_oldest_and_counts():
    r = RecordRing(4, 5)
    lost = 0
    for i in range(12):
        if r.push(_rec(i)):
            lost += 1
    assert lost == 7 and r.overwritten == 7 and len(r) == 5
    # backfill drains oldest-first: the five newest, in order
    out = []
    while len(r):
        out.append(bytes(r.peek(0)))
        r.pop()
    assert out == [_rec(i) for i in range(7, 12)]


def test_record_ring_wraps_many_times_without_growing():
    r = RecordRing(4, 7)
    for i in range(1000):
        r.push(_rec(i))
        if i % 3 == 1:
            r.pop()
    assert len(r) == 7
    assert [bytes(r.peek(i)) for i in range(7)] == [_rec(i) for i in range(993, 1000)]


def test_record_ring_rejects_wrong_sizes_and_empty_pop():
    r = RecordRing(4, 3)
    raises(ValueError, r.push, b"abc")
    raises(IndexError, r.pop)
    raises(IndexError, r.peek, 0)
    raises(ValueError, RecordRing, 0, 3)


def test_int_ring_triplets_overflow():
    r = IntRing(3, 4)
    for i in range(6):
        r.push(i, -i, 1000 + i)
    assert len(r) == 4 and r.overwritten == 2
    assert [r.get(k, 0) for k in range(4)] == [2, 3, 4, 5]
    assert r.get(0, 1) == -2 and r.get(3, 2) == 1005
    r.drop(3)
    assert len(r) == 1 and r.get(0) == 5
    raises(IndexError, r.drop, 2)
