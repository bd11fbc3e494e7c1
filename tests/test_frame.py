"""The frame format: golden vectors pin the bytes; every bad frame raises FrameError."""
import hmac
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from firmware import frame as F

VECTORS = json.loads((Path(__file__).parent / "vectors" / "frames.json").read_text())["vectors"]


def _encode_payload(v):
    f = v["fields"]
    t = v["frame_type"]
    if t == F.TYPE_TELEMETRY:
        return F.encode_telemetry(f["rate_hz"], f["ppg"], [tuple(a) for a in f["accel_mg"]], f["led_current"])
    if t == F.TYPE_EVENT:
        return F.encode_event(f["code"], f["detail"], f["priority"])
    if t == F.TYPE_STATUS:
        return F.encode_status(f["battery_pct"], f["battery_mv"], tuple(f["firmware"]), f["status_bits"], f["dropped"])
    return F.encode_command(f["code"], f["arg"], f["word"])


def _decoded_fields(t, payload):
    d = F.decode_payload(t, payload)
    if t == F.TYPE_TELEMETRY:
        return dict(rate_hz=d[0], led_current=d[1], ppg=d[2], accel_mg=[list(a) for a in d[3]])
    if t == F.TYPE_EVENT:
        return dict(code=d[0], priority=d[1], detail=d[2])
    if t == F.TYPE_STATUS:
        return dict(battery_pct=d[0], battery_mv=d[1], firmware=list(d[2]), status_bits=d[3], dropped=d[4])
    return dict(code=d[0], arg=d[1], word=d[2])


@pytest.mark.parametrize("v", VECTORS, ids=[v["name"] for v in VECTORS])
class TestGoldenVectors:
    def test_encoder_reproduces_bytes(self, v):
        keys = F.DeviceKeys(bytes.fromhex(v["key"]))
        payload = _encode_payload(v)
        assert payload.hex() == v["payload"]
        sealed = F.seal(keys, v["frame_type"], v["device_id"], v["seq"], v["time_ms"], payload, v["flags"])
        assert sealed.hex() == v["frame"]
        assert len(sealed) <= F.MAX_FRAME_LEN

    def test_decoder_yields_fields(self, v):
        keys = F.DeviceKeys(bytes.fromhex(v["key"]))
        header, payload = F.open_frame(bytes.fromhex(v["frame"]), keys)
        assert (header.frame_type, header.flags, header.device_id, header.seq, header.time_ms) == (
            v["frame_type"], v["flags"], v["device_id"], v["seq"], v["time_ms"])
        assert payload.hex() == v["payload"]
        assert _decoded_fields(header.frame_type, payload) == v["fields"]

    def test_every_tampered_byte_is_rejected(self, v):
        keys = F.DeviceKeys(bytes.fromhex(v["key"]))
        good = bytes.fromhex(v["frame"])
        for i in range(len(good)):
            bad = bytearray(good)
            bad[i] ^= 0x01
            with pytest.raises(F.FrameError):
                F.open_frame(bytes(bad), keys)

    def test_wrong_key_is_rejected(self, v):
        with pytest.raises(F.FrameError) as e:
            F.open_frame(bytes.fromhex(v["frame"]), F.DeviceKeys(bytes(32)))
        assert e.value.reason == "bad_tag"

    def test_every_truncation_is_rejected(self, v):
        keys = F.DeviceKeys(bytes.fromhex(v["key"]))
        good = bytes.fromhex(v["frame"])
        for n in range(len(good)):
            with pytest.raises(F.FrameError) as e:
                F.open_frame(good[:n], keys)
            assert e.value.reason in ("truncated", "bad_length")


class TestEncryption:
    def test_payload_is_not_readable_without_key(self):
        v = VECTORS[0]
        assert bytes.fromhex(v["payload"]) not in bytes.fromhex(v["frame"])

    def test_pure_hmac_matches_stdlib(self):
        for n in (0, 1, 63, 64, 65, 200):
            key, msg = bytes(range(32)), bytes(range(n % 256)) * 1
            assert F._hmac_sha256_pure(key, msg) == hmac.digest(key, msg, "sha256")
        long_key = bytes(100)
        assert F._hmac_sha256_pure(long_key, b"x") == hmac.digest(long_key, b"x", "sha256")

    def test_keyed_hmac_with_kept_pads_matches_stdlib(self):
        key = bytes(range(1, 33))
        keyed = F._KeyedHmac(key)
        for n in (0, 1, 24, 63, 64, 65, 212):
            msg = bytes(range(n % 256))
            assert keyed.digest(msg) == hmac.digest(key, msg, "sha256")
            assert keyed.digest(msg) == keyed.digest(msg)  # the kept pads are copied, never consumed
        keyed._inner = keyed._outer = None  # the MicroPython path
        assert keyed.digest(b"abc") == hmac.digest(key, b"abc", "sha256")


class TestParseHeader:
    def test_reads_cleartext_without_key(self):
        v = VECTORS[3]
        h = F.parse_header(bytes.fromhex(v["frame"]))
        assert (h.type_name, h.device_id, h.seq) == ("event", v["device_id"], v["seq"])

    @pytest.mark.parametrize("offset,value,reason", [(0, 2, "bad_version"), (1, 9, "bad_type"), (2, 0x80, "bad_flags"), (19, 3, "bad_length")])
    def test_bad_header_fields(self, offset, value, reason):
        bad = bytearray.fromhex(VECTORS[3]["frame"])
        bad[offset] = value
        with pytest.raises(F.FrameError) as e:
            F.parse_header(bytes(bad))
        assert e.value.reason == reason

    def test_oversize(self):
        with pytest.raises(F.FrameError) as e:
            F.parse_header(bytes(F.MAX_FRAME_LEN + 1))
        assert e.value.reason == "oversize"


class TestPayloadEncoders:
    def test_too_many_samples(self):
        with pytest.raises(F.FrameError):
            F.encode_telemetry(50, [0] * 24, [(0, 0, 0)] * 24)

    def test_max_samples_fit_one_notification(self):
        keys = F.DeviceKeys(bytes(32))
        p = F.encode_telemetry(50, [0] * F.MAX_SAMPLES, [(0, 0, 0)] * F.MAX_SAMPLES)
        assert len(F.seal(keys, 1, 1, 1, 1, p)) <= F.MAX_FRAME_LEN

    @pytest.mark.parametrize("call", [
        lambda: F.encode_telemetry(50, [-1], [(0, 0, 0)]),
        lambda: F.encode_telemetry(50, [0], [(40000, 0, 0)]),
        lambda: F.encode_telemetry(0, [0], [(0, 0, 0)]),
        lambda: F.encode_event(99),
        lambda: F.encode_status(101, 4000, (1, 0, 0)),
        lambda: F.encode_command(99),
        lambda: F.DeviceKeys(b"short"),
    ])
    def test_out_of_range_raises_frame_error(self, call):
        with pytest.raises(F.FrameError):
            call()

    def test_mismatched_telemetry_length(self):
        p = F.encode_telemetry(50, [1, 2], [(0, 0, 0), (0, 0, 0)])
        with pytest.raises(F.FrameError):
            F.decode_telemetry(p[:-1])


class TestReplayGuard:
    def test_in_order_and_reordered_accepted_once(self):
        g = F.ReplayGuard(window=64)
        for s in (1, 2, 5, 3, 4):
            g.accept(s)
        for s in (1, 2, 3, 4, 5):
            with pytest.raises(F.FrameError) as e:
                g.accept(s)
            assert e.value.reason == "replayed"

    def test_older_than_window_refused(self):
        g = F.ReplayGuard(window=64)
        g.accept(1000)
        g.accept(937)  # inside the window
        with pytest.raises(F.FrameError):
            g.check(936)

    def test_large_jump_resets_window(self):
        g = F.ReplayGuard(window=64)
        g.accept(1)
        g.accept(10_000)
        g.accept(9_999)
        with pytest.raises(F.FrameError):
            g.accept(10_000)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_only_raise_frame_error(data):
    keys = F.DeviceKeys(bytes(32))
    try:
        header, payload = F.open_frame(data, keys)
    except F.FrameError:
        return
    F.decode_payload(header.frame_type, payload)  # only FrameError may escape


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 0xFFFFFF), st.integers(-32767, 32767), st.integers(-32767, 32767), st.integers(-32767, 32767)), min_size=1, max_size=F.MAX_SAMPLES),
       st.integers(0, 0xFFFFFFFF))
def test_telemetry_roundtrip(samples, seq):
    keys = F.DeviceKeys(bytes(range(32)))
    ppg = [s[0] for s in samples]
    acc = [s[1:] for s in samples]
    frame_bytes = F.seal(keys, F.TYPE_TELEMETRY, 42, seq, 123, F.encode_telemetry(50, ppg, acc))
    header, payload = F.open_frame(frame_bytes, keys)
    rate, _, ppg2, acc2 = F.decode_telemetry(payload)
    assert (rate, ppg2, [tuple(a) for a in acc2], header.seq) == (50, ppg, acc, seq)


def _assert_backend_decode_equals_the_codec(payload, got):
    """``got``, the backend's decode of ``payload``, is what firmware.frame's codec makes of it:
    the same values (as int32 / int16 arrays) or a FrameError with the same reason and detail."""
    try:
        want = F.decode_telemetry(payload)
    except F.FrameError as exc:
        assert isinstance(got, F.FrameError) and (got.reason, got.detail) == (exc.reason, exc.detail)
        return
    assert not isinstance(got, F.FrameError), got
    assert got[:2] == want[:2]
    assert got[2].dtype == np.int32 and got[2].tolist() == list(want[2])
    assert got[3].dtype == np.int16 and got[3].shape == (len(want[3]), 3)
    assert [tuple(a) for a in got[3].tolist()] == [tuple(a) for a in want[3]]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 0xFFFFFF), st.integers(-32767, 32767), st.integers(-32767, 32767), st.integers(-32767, 32767)), min_size=1, max_size=F.MAX_SAMPLES),
       st.integers(0, 255))
def test_backend_decode_of_one_payload_equals_the_frame_codec(samples, led):
    from backend.ingest.service import decode_telemetry_batch

    payload = F.encode_telemetry(50, [s[0] for s in samples], [s[1:] for s in samples], led)
    [got] = decode_telemetry_batch([payload])  # a single frame is a batch of one
    assert not isinstance(got, F.FrameError)
    _assert_backend_decode_equals_the_codec(payload, got)
    for bad in (payload[:-1], payload[:2], bytes([50, 0, 0, 0])):
        [got] = decode_telemetry_batch([bad])
        assert isinstance(got, F.FrameError)
        _assert_backend_decode_equals_the_codec(bad, got)


_sample = st.tuples(st.integers(0, 0xFFFFFF), st.integers(-32767, 32767), st.integers(-32767, 32767), st.integers(-32767, 32767))


@st.composite
def _telemetry_payload(draw):
    samples = draw(st.lists(_sample, min_size=1, max_size=4))
    payload = bytearray(F.encode_telemetry(draw(st.sampled_from([25, 50])), [s[0] for s in samples],
                                           [s[1:] for s in samples], draw(st.integers(0, 255))))
    damage = draw(st.sampled_from(["none", "none", "rate0", "count", "truncate", "extend"]))
    if damage == "rate0":
        payload[0] = 0
    elif damage == "count":  # the sample count disagrees with the length
        payload[1] = draw(st.sampled_from([0, len(samples) + 1, F.MAX_SAMPLES + 1, 255]))
    elif damage == "truncate":
        payload = payload[:draw(st.integers(0, len(payload) - 1))]
    elif damage == "extend":
        payload += bytes(draw(st.integers(1, 2 * F.TELEMETRY_SAMPLE_LEN)))
    return bytes(payload)


@settings(max_examples=150, deadline=None)
@given(st.lists(_telemetry_payload(), min_size=1, max_size=12))
def test_backend_batch_decode_equals_the_frame_codec(payloads):
    from backend.ingest.service import decode_telemetry_batch

    got = decode_telemetry_batch(payloads)
    assert len(got) == len(payloads)
    for payload, decoded in zip(payloads, got):
        _assert_backend_decode_equals_the_codec(payload, decoded)
