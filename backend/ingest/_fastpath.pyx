# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False, cdivision=True
"""Ingest's compiled path over one socket read: header, tag, keystream, replay window, telemetry
decode, in C; SHA-256 from the system's libcrypto (OpenSSL).

The reference is the pure-Python path (``FrameVerifier.verify_reference`` in service.py, over
firmware/frame.py): it stays the definition, and this module only ever takes the road where every
check passes. Any message this path would refuse, or does not handle, is handed to the
reference's own per-message step before the next message is looked at, so refusals keep their
reasons and details and each device's replay window sees the same order. The two are tested
equal on random and damaged frames (tests/backend/test_fastpath.py). Built by ``pip install -e .``
(setup.py); backend/ingest/fastpath.py says whether it is here.
"""
from libc.stdint cimport uint8_t, uint32_t, uint64_t, int16_t, int32_t
from libc.string cimport memcpy
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE, PyBytes_FromStringAndSize
from cpython.mem cimport PyMem_Malloc, PyMem_Free
from cpython.unicode cimport PyUnicode_DecodeASCII

import numpy as np

from firmware.frame import FrameError as _FrameError

# what backend/ingest/fastpath.py expects: a build of an older source is refused there, loudly
REVISION = 3

cdef extern from "openssl/sha.h" nogil:
    # The low-level SHA-256 API: its context is a plain struct, so a key's two hashed pads are
    # copied per message by assignment (the EVP API allocates per copy).
    ctypedef struct SHA256_CTX:
        unsigned int num
    int SHA256_Init(SHA256_CTX *c)
    int SHA256_Update(SHA256_CTX *c, const void *data, size_t n)
    int SHA256_Final(unsigned char *md, SHA256_CTX *c)

# firmware/frame.py's layout (FRAME_SPEC.md); fastpath.py compares LAYOUT with it at import
cdef enum:
    _HEADER_LEN = 20
    _TAG_LEN = 8
    _MAX_FRAME_LEN = 244
    _VERSION = 1
    _KNOWN_FLAGS = 0x07
    _FLAG_ENCRYPTED = 0x01
    _TYPE_TELEMETRY = 1
    _TYPE_EVENT = 2
    _TELEMETRY_HEADER_LEN = 4
    _TELEMETRY_SAMPLE_LEN = 9
    _MAX_SAMPLES = 23

LAYOUT = {"HEADER_LEN": _HEADER_LEN, "TAG_LEN": _TAG_LEN, "MAX_FRAME_LEN": _MAX_FRAME_LEN, "VERSION": _VERSION,
          "_KNOWN_FLAGS": _KNOWN_FLAGS, "FLAG_ENCRYPTED": _FLAG_ENCRYPTED, "TYPE_TELEMETRY": _TYPE_TELEMETRY, "TYPE_EVENT": _TYPE_EVENT,
          "TELEMETRY_HEADER_LEN": _TELEMETRY_HEADER_LEN, "TELEMETRY_SAMPLE_LEN": _TELEMETRY_SAMPLE_LEN,
          "MAX_SAMPLES": _MAX_SAMPLES}


cdef inline void _pads(const uint8_t *key, Py_ssize_t n, SHA256_CTX *inner, SHA256_CTX *outer) noexcept nogil:
    cdef uint8_t block[64]
    cdef Py_ssize_t i
    for i in range(64):
        block[i] = (key[i] if i < n else 0) ^ 0x36
    SHA256_Init(inner)
    SHA256_Update(inner, block, 64)
    for i in range(64):
        block[i] = (key[i] if i < n else 0) ^ 0x5C
    SHA256_Init(outer)
    SHA256_Update(outer, block, 64)


cdef inline void _hmac(const SHA256_CTX *inner, const SHA256_CTX *outer, const uint8_t *a, size_t alen,
                       const uint8_t *b, size_t blen, uint8_t *out) noexcept nogil:
    # HMAC-SHA256 of a || b from a key's hashed pads
    cdef SHA256_CTX c = inner[0]
    cdef uint8_t d[32]
    SHA256_Update(&c, a, alen)
    if blen:
        SHA256_Update(&c, b, blen)
    SHA256_Final(d, &c)
    c = outer[0]
    SHA256_Update(&c, d, 32)
    SHA256_Final(out, &c)


cdef class KeyPads:
    """A device's two derived keys (firmware.frame.DeviceKeys: mac_key, enc_key) as hashed HMAC pads."""
    cdef SHA256_CTX mac_inner, mac_outer, enc_inner, enc_outer
    cdef readonly object keys  # the DeviceKeys these came from: a registry reload with a new key makes new pads

    def __cinit__(self, keys):
        cdef bytes mac = bytes(keys.mac_key)
        cdef bytes enc = bytes(keys.enc_key)
        if len(mac) > 64 or len(enc) > 64:
            raise ValueError("derived keys are 32 bytes")
        self.keys = keys
        _pads(<const uint8_t *>PyBytes_AS_STRING(mac), len(mac), &self.mac_inner, &self.mac_outer)
        _pads(<const uint8_t *>PyBytes_AS_STRING(enc), len(enc), &self.enc_inner, &self.enc_outer)

    def mac(self, bytes msg):
        """HMAC-SHA256 under the MAC key (for the tests against hmac.digest)."""
        cdef uint8_t out[32]
        _hmac(&self.mac_inner, &self.mac_outer, <const uint8_t *>PyBytes_AS_STRING(msg), len(msg), NULL, 0, out)
        return PyBytes_FromStringAndSize(<char *>out, 32)


cdef inline bint _tag_ok(KeyPads pads, const uint8_t *buf, Py_ssize_t end) noexcept nogil:
    # constant time over the tag, as firmware.frame._tags_equal
    cdef uint8_t d[32]
    cdef uint8_t diff = 0
    cdef int i
    _hmac(&pads.mac_inner, &pads.mac_outer, buf, end, NULL, 0, d)
    for i in range(_TAG_LEN):
        diff |= d[i] ^ buf[end + i]
    return diff == 0


cdef inline void _decrypt(KeyPads pads, const uint8_t *buf, Py_ssize_t plen, uint8_t *out) noexcept nogil:
    # keystream block i = HMAC(enc_key, header || le32(i)), as firmware.frame._keystream_xor
    cdef uint8_t stream[32]
    cdef uint8_t counter[4]
    cdef Py_ssize_t block, j, k, top
    for block in range((plen + 31) // 32):
        counter[0] = block & 0xFF
        counter[1] = (block >> 8) & 0xFF
        counter[2] = (block >> 16) & 0xFF
        counter[3] = (block >> 24) & 0xFF
        _hmac(&pads.enc_inner, &pads.enc_outer, buf, _HEADER_LEN, counter, 4, stream)
        top = plen - block * 32
        if top > 32:
            top = 32
        for j in range(top):
            k = block * 32 + j
            out[k] = buf[_HEADER_LEN + k] ^ stream[j]


def open_frame(bytes buf, KeyPads pads):
    """The compiled ``firmware.frame.open_frame`` for a frame whose header already checked:
    the payload (decrypted when flagged), or None when the tag is wrong."""
    cdef const uint8_t *p = <const uint8_t *>PyBytes_AS_STRING(buf)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(buf)
    if n < _HEADER_LEN + _TAG_LEN or p[19] + _HEADER_LEN + _TAG_LEN != n:
        raise ValueError("not a frame whose header checked")
    return _open(pads, p, n)


cdef object _open(KeyPads pads, const uint8_t *p, Py_ssize_t n):
    cdef Py_ssize_t plen = n - _HEADER_LEN - _TAG_LEN
    cdef object body
    if not _tag_ok(pads, p, _HEADER_LEN + plen):
        return None
    body = PyBytes_FromStringAndSize(NULL, plen)
    if p[2] & _FLAG_ENCRYPTED:
        _decrypt(pads, p, plen, <uint8_t *>PyBytes_AS_STRING(body))
    else:
        memcpy(PyBytes_AS_STRING(body), p + _HEADER_LEN, plen)
    return body


cdef inline uint32_t _u32(const uint8_t *p) noexcept nogil:
    return p[0] | (<uint32_t>p[1] << 8) | (<uint32_t>p[2] << 16) | (<uint32_t>p[3] << 24)


def decode_telemetry(list payloads):
    """Telemetry payloads (bytes) decoded as ``backend.ingest.service.decode_telemetry_batch``
    decodes the valid ones: (rate_hz, led_current, ppg (n,) int32, accel (n, 3) int16), views of
    two arrays for the whole list; None where the payload is not valid (the reference says why)."""
    cdef Py_ssize_t count = len(payloads), i, total = 0, length, n, off, s, k
    cdef const uint8_t *p
    cdef object payload
    cdef list out = [None] * count
    cdef Py_ssize_t[::1] samples = np.zeros(count, np.intp)
    for i in range(count):
        payload = payloads[i]
        if type(payload) is not bytes:
            continue
        length = PyBytes_GET_SIZE(payload)
        if length < _TELEMETRY_HEADER_LEN:
            continue
        p = <const uint8_t *>PyBytes_AS_STRING(payload)
        n = p[1]
        if n == 0 or n > _MAX_SAMPLES or p[0] == 0 or length != _TELEMETRY_HEADER_LEN + n * _TELEMETRY_SAMPLE_LEN:
            continue
        samples[i] = n
        total += n
    if not total:
        return out
    ppg_all = np.empty(total, np.int32)
    accel_all = np.empty((total, 3), np.int16)
    cdef int32_t[::1] ppg = ppg_all
    cdef int16_t[:, ::1] accel = accel_all
    off = 0
    for i in range(count):
        n = samples[i]
        if not n:
            continue
        p = <const uint8_t *>PyBytes_AS_STRING(payloads[i])
        for s in range(n):
            k = _TELEMETRY_HEADER_LEN + 3 * s
            ppg[off + s] = p[k] | (<int32_t>p[k + 1] << 8) | (<int32_t>p[k + 2] << 16)
        for s in range(n):
            k = _TELEMETRY_HEADER_LEN + 3 * n + 6 * s
            accel[off + s, 0] = <int16_t>(p[k] | (p[k + 1] << 8))
            accel[off + s, 1] = <int16_t>(p[k + 2] | (p[k + 3] << 8))
            accel[off + s, 2] = <int16_t>(p[k + 4] | (p[k + 5] << 8))
        out[i] = (p[0], p[2], ppg_all[off:off + n], accel_all[off:off + n])
        off += n
    return out


cdef class ReplayWindow:
    """``firmware.frame.ReplayGuard`` (check, accept, state, restore, window, highest) over a C
    bitmap: bit i set means highest - i was accepted. The guard's own big integer is shifted and
    masked at each accept; here that is a few machine words. Sequence numbers are int64."""
    cdef readonly Py_ssize_t window
    cdef readonly long long highest
    cdef uint64_t *_words
    cdef Py_ssize_t _nwords

    def __cinit__(self, Py_ssize_t window=4096, long long highest=-1):
        if window < 1:
            raise ValueError("a replay window holds at least one sequence number")
        self.window = window
        self.highest = highest
        self._nwords = (window + 63) // 64
        self._words = <uint64_t *>PyMem_Malloc(self._nwords * sizeof(uint64_t))
        if self._words is NULL:
            raise MemoryError()
        self._clear()

    def __dealloc__(self):
        PyMem_Free(self._words)

    cdef inline void _clear(self) noexcept:
        cdef Py_ssize_t k
        for k in range(self._nwords):
            self._words[k] = 0

    cdef inline bint _bit(self, long long age) noexcept:
        return (self._words[age >> 6] >> (age & 63)) & 1

    cdef int _check(self, long long seq) except -1:
        cdef long long age
        if seq > self.highest:
            return 0
        age = self.highest - seq
        if age >= self.window:
            raise _FrameError("replayed", "seq %d is older than the window (highest %d)" % (seq, self.highest))
        if self._bit(age):
            raise _FrameError("replayed", "seq %d was already accepted" % seq)
        return 0

    cdef int _accept(self, long long seq) except -1:
        cdef long long shift, age
        cdef Py_ssize_t k, words, bits, src
        cdef uint64_t v
        self._check(seq)
        if seq > self.highest:
            shift = seq - self.highest
            if shift >= self.window:
                self._clear()
            else:  # every bit moves up by shift: bit i (highest - i) becomes bit i + shift
                words, bits = shift >> 6, shift & 63
                for k in range(self._nwords - 1, -1, -1):
                    src = k - words
                    v = 0
                    if src >= 0:
                        v = self._words[src] << bits
                        if bits and src >= 1:
                            v |= self._words[src - 1] >> (64 - bits)
                    self._words[k] = v
                if self.window & 63:  # bits at or beyond the window fall off
                    self._words[self._nwords - 1] &= (<uint64_t>1 << (self.window & 63)) - 1
            self._words[0] |= 1
            self.highest = seq
        else:
            age = self.highest - seq
            self._words[age >> 6] |= <uint64_t>1 << (age & 63)
        return 0

    def check(self, long long seq):
        """Raise FrameError('replayed') unless seq is new; does not record it."""
        self._check(seq)

    def accept(self, long long seq):
        """Record seq as accepted (call after the frame's tag verified)."""
        self._accept(seq)

    def state(self):
        """(highest, bitmap) to save: bit i set means highest - i was accepted."""
        cdef bytearray raw = bytearray(self._nwords * 8)
        cdef Py_ssize_t k, b
        for k in range(self._nwords):
            for b in range(8):
                raw[8 * k + b] = (self._words[k] >> (8 * b)) & 0xFF
        return self.highest, int.from_bytes(raw, "little")

    def restore(self, long long highest, seen):
        """Continue from a saved state (bits beyond the window are dropped)."""
        cdef object window = self.window  # a Python int: the mask is window bits wide
        cdef bytes raw = (seen & ((1 << window) - 1)).to_bytes(self._nwords * 8, "little")
        cdef const uint8_t *p = <const uint8_t *>PyBytes_AS_STRING(raw)
        cdef Py_ssize_t k, b
        cdef uint64_t v
        for k in range(self._nwords):
            v = 0
            for b in range(8):
                v |= (<uint64_t>p[8 * k + b]) << (8 * b)
            self._words[k] = v
        self.highest = highest


def acknowledge(frames, set changed):
    """``DeviceRegistry.acknowledged``: each verified frame's seq into its device's ``acked``
    window (older than the window: nothing to add), its device into ``changed``."""
    cdef object frame, record, acked
    for frame in frames:
        if frame is None:
            continue
        record = frame.device
        acked = record.acked
        try:
            if type(acked) is ReplayWindow:
                (<ReplayWindow>acked)._accept(frame.header.seq)
            else:
                acked.accept(frame.header.seq)
        except _FrameError:
            continue
        changed.add(record.device_id)


def take_publishes(bytes buf, Py_ssize_t pos, list out):
    """From ``pos`` in a read of the broker's stream, the whole MQTT 5 PUBLISH packets with an
    ASCII topic and no properties (what a gateway's frame is) appended to ``out`` as
    (topic, payload, None, packet id), as ``UplinkSubscriber.feed`` makes them. Stops at the
    first packet that is anything else or not complete, and returns its position: the
    reference parser (backend/ingest/mqtt.py) takes it from there."""
    cdef const uint8_t *b = <const uint8_t *>PyBytes_AS_STRING(buf)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(buf), start, end, length, tlen, p, k
    cdef int shift
    cdef uint8_t first, byte
    cdef bint plain
    cdef unsigned int packet_id
    while pos + 2 <= n:
        first = b[pos]
        if first >> 4 != 3:
            return pos
        length, shift, start = 0, 0, pos + 1
        while True:  # the remaining length: at most 4 bytes
            if start >= n or shift > 21:
                return pos
            byte = b[start]
            start += 1
            length |= (byte & 0x7F) << shift
            if not byte & 0x80:
                break
            shift += 7
        end = start + length
        if end > n or length < 2:
            return pos
        tlen = (b[start] << 8) | b[start + 1]
        p = start + 2 + tlen
        packet_id = 0
        if first & 0x06:
            if p + 2 > end:
                return pos
            packet_id = (b[p] << 8) | b[p + 1]
            p += 2
        if p >= end or b[p] != 0:  # properties (or none of their length): the reference reads them
            return pos
        plain = True
        for k in range(start + 2, start + 2 + tlen):
            if b[k] >= 0x80:
                plain = False
                break
        if not plain:
            return pos
        out.append((PyUnicode_DecodeASCII(<const char *>b + start + 2, tlen, NULL),
                    PyBytes_FromStringAndSize(<const char *>b + p + 1, end - p - 1), None, packet_id))
        pos = end
    return pos


cdef class CompiledVerifier:
    """``FrameVerifier.verify`` over one read. ``reference`` is the FrameVerifier whose
    ``check_one`` (the reference's step for one message) takes every message this path does not
    carry to the end itself; ``names`` the Python objects it builds and calls (service.py)."""
    cdef object _reference, _registry, _parse_topic, _kind_by_type, _location, _Header, _decode_payload
    cdef object _FrameError, _FrameRejected, _Poisoned, _VerifiedFrame, _Pending, _finish
    cdef dict _pads

    def __init__(self, reference, registry, names):
        self._reference = reference
        self._registry = registry
        self._parse_topic = names["parse_topic"]
        self._kind_by_type = names["kind_by_type"]
        self._location = names["location"]
        self._Header = names["Header"]
        self._decode_payload = names["decode_payload"]
        self._FrameError = names["FrameError"]
        self._FrameRejected = names["FrameRejected"]
        self._Poisoned = names["Poisoned"]
        self._VerifiedFrame = names["VerifiedFrame"]
        self._Pending = names["Pending"]
        self._finish = names["finish_telemetry"]
        self._pads = {}

    cdef KeyPads _pads_of(self, device):
        keys = device.keys
        cdef KeyPads pads = self._pads.get(device.device_id)
        if pads is None or pads.keys is not keys:
            pads = KeyPads(keys)
            self._pads[device.device_id] = pads
        return pads

    def verify(self, list messages, bint replaying=False):
        cdef list results = []
        # the telemetry whose checks passed, decoded together at the end: index, device, gateway, header, body
        cdef list index = [], devices = [], gateways = [], headers = [], bodies = []
        cdef object message, result
        for message in messages:
            result = self._fast(message, replaying)
            if result is None:  # off the fast road: the reference's own step
                result = self._reference.check_one(message, replaying)
                if isinstance(result, self._Pending):
                    result = (result.device, result.gateway, result.header, result.body)
            if type(result) is tuple:
                index.append(len(results))
                devices.append((<tuple>result)[0])
                gateways.append((<tuple>result)[1])
                headers.append((<tuple>result)[2])
                bodies.append((<tuple>result)[3])
                results.append(None)
            else:
                results.append(result)
        if index:
            self._decode_pending(results, index, devices, gateways, headers, bodies)
        return results

    cdef _decode_pending(self, list results, list index, list devices, list gateways, list headers, list bodies):
        cdef list decoded = decode_telemetry(bodies)
        cdef list rest = []
        cdef Py_ssize_t k
        VerifiedFrame = self._VerifiedFrame
        for k in range(len(index)):
            d = decoded[k]
            if d is None:
                rest.append((index[k], self._Pending(devices[k], gateways[k], headers[k], bodies[k])))
            else:
                results[index[k]] = VerifiedFrame(devices[k], gateways[k], headers[k], d, None)
        if rest:  # the reference decodes the payloads this path found invalid: the same refusal
            self._finish(results, rest)

    cdef object _fast(self, object message, bint replaying):
        """The message's result when every check passes on this road; None to hand it to the
        reference (nothing was changed yet)."""
        cdef object topic, payload, props, where, device, guard, body, header, decoded
        cdef const uint8_t *p
        cdef Py_ssize_t n
        cdef uint8_t frame_type, flags
        cdef uint32_t device_id, seq
        cdef uint64_t time_ms
        if type(message) is not tuple or len(message) < 3:
            return None
        topic, payload, props = message[0], message[1], message[2]
        if type(payload) is not bytes:
            return None
        n = PyBytes_GET_SIZE(payload)
        if n > _MAX_FRAME_LEN or n < _HEADER_LEN + _TAG_LEN:
            return None
        p = <const uint8_t *>PyBytes_AS_STRING(payload)
        frame_type, flags = p[1], p[2]
        if p[0] != _VERSION or frame_type < 1 or frame_type > 4 or flags & ~_KNOWN_FLAGS \
                or p[19] + _HEADER_LEN + _TAG_LEN != n:
            return None
        device_id, seq = _u32(p + 3), _u32(p + 7)
        time_ms = <uint64_t>_u32(p + 11) | (<uint64_t>_u32(p + 15) << 32)
        try:
            where = self._parse_topic(topic)
            if where.direction != "up" or where.device_id != device_id \
                    or self._kind_by_type.get(frame_type) != where.kind:
                return None
            device = self._registry.get(device_id)
            if device is None or device.agency_id != where.agency or device.status != "active":
                return None
            if device.gateways and where.gateway not in device.gateways:
                return None
            guard = device.replay
            if not replaying:
                if type(guard) is ReplayWindow:
                    (<ReplayWindow>guard)._check(seq)
                else:
                    guard.check(seq)
            body = _open(self._pads_of(device), p, n)
        except Exception:
            return None  # the reference raises the same and says why
        if body is None:
            return None  # a wrong tag: the reference refuses it (bad_tag), with its detail
        # the tag is good: from here on this message is this road's to finish
        try:
            try:
                if type(guard) is ReplayWindow:
                    (<ReplayWindow>guard)._accept(seq)
                else:
                    guard.accept(seq)
            except self._FrameError as exc:
                if not replaying:  # (never: it was checked just now)
                    raise self._FrameRejected(exc.reason, exc.detail) from exc
            header = self._Header(_VERSION, frame_type, flags, device_id, seq, time_ms, n - _HEADER_LEN - _TAG_LEN)
            if frame_type != _TYPE_TELEMETRY:
                try:
                    decoded = self._decode_payload(frame_type, body)
                except self._FrameError as exc:
                    raise self._FrameRejected(exc.reason, exc.detail) from exc
            if device.officer_id is None:
                raise self._FrameRejected("unassigned_device", str(device_id))
        except self._FrameRejected as exc:
            return exc
        except Exception as exc:
            return self._Poisoned(exc)
        if frame_type == _TYPE_TELEMETRY:
            return (device, where.gateway, header, body)  # decoded with the read's other telemetry
        return self._VerifiedFrame(device, where.gateway, header, decoded,
                                   self._location(props) if frame_type == _TYPE_EVENT else None)
