"""The shared frame codec against its golden vectors: the same assertions on CPython and on
MicroPython (whose HMAC is the pure-Python one in frame.py)."""
from firmware import frame as F
from fw_portable_helpers import raises, read_json


def _vectors():
    return read_json("tests/vectors/frames.json")["vectors"]


def _payload(v):
    f = v["fields"]
    t = v["frame_type"]
    if t == F.TYPE_TELEMETRY:
        return F.encode_telemetry(f["rate_hz"], f["ppg"], [tuple(a) for a in f["accel_mg"]], f["led_current"])
    if t == F.TYPE_EVENT:
        return F.encode_event(f["code"], f["detail"], f["priority"])
    if t == F.TYPE_STATUS:
        return F.encode_status(f["battery_pct"], f["battery_mv"], tuple(f["firmware"]), f["status_bits"], f["dropped"])
    return F.encode_command(f["code"], f["arg"], f["word"])


def test_golden_vectors_encode_to_the_same_bytes():
    vs = _vectors()
    assert len(vs) >= 4
    for v in vs:
        keys = F.DeviceKeys(bytes.fromhex(v["key"]))
        payload = _payload(v)
        assert payload == bytes.fromhex(v["payload"]), v["name"]
        sealed = F.seal(keys, v["frame_type"], v["device_id"], v["seq"], v["time_ms"], payload, v["flags"])
        assert sealed == bytes.fromhex(v["frame"]), v["name"]


def test_golden_vectors_decode_to_their_fields():
    for v in _vectors():
        keys = F.DeviceKeys(bytes.fromhex(v["key"]))
        header, payload = F.open_frame(bytes.fromhex(v["frame"]), keys)
        assert header.frame_type == v["frame_type"] and header.seq == v["seq"], v["name"]
        assert header.device_id == v["device_id"] and header.time_ms == v["time_ms"], v["name"]
        assert payload == bytes.fromhex(v["payload"]), v["name"]
        decoded = F.decode_payload(header.frame_type, payload)
        if header.frame_type == F.TYPE_TELEMETRY:
            assert decoded[2] == v["fields"]["ppg"]
            assert [list(a) for a in decoded[3]] == v["fields"]["accel_mg"]


def test_tampered_truncated_and_wrong_key_frames_raise_frame_error():
    wrong = F.DeviceKeys(bytes(range(32)))
    for v in _vectors():
        keys = F.DeviceKeys(bytes.fromhex(v["key"]))
        good = bytes.fromhex(v["frame"])
        for i in range(0, len(good), 11):  # a spread of positions: header, payload and tag
            bad = bytearray(good)
            bad[i] ^= 0x01
            raises(F.FrameError, F.open_frame, bytes(bad), keys)
        raises(F.FrameError, F.open_frame, good[:-1], keys)
        if bytes.fromhex(v["key"]) != bytes(range(32)):
            assert raises(F.FrameError, F.open_frame, good, wrong).reason == "bad_tag"


def test_replay_guard_accepts_each_sequence_number_once():
    g = F.ReplayGuard(window=64)
    for s in (5, 3, 9, 4):
        g.accept(s)
    assert raises(F.FrameError, g.accept, 3).reason == "replayed"
    g.accept(200)
    assert raises(F.FrameError, g.check, 100).reason == "replayed"  # older than the window
