"""Ingest's compiled path (backend/ingest/_fastpath.pyx) gives what the pure-Python reference
gives: the same verified frames (header, samples, gateway, location), the same refusals with the
same reasons and details, the same replay windows after, on random reads of valid and damaged
frames (bit flips, truncation, wrong key, replays, wrong topics, bad payloads)."""
from __future__ import annotations

import hmac
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from backend.app.metrics import BackendMetrics
from backend.exceptions import FrameRejected
from backend.ingest import fastpath
from backend.ingest.service import FrameVerifier, Poisoned, VerifiedFrame  # before registry: its import cycle
from backend.ingest.registry import DeviceRecord, DeviceRegistry
from firmware import frame as F
from gateway import topics

AGENCY, OTHER_AGENCY = "fast", "elsewhere"
GATEWAY = "gw-a"
T0_MS = 1_800_000_000_000


def test_compiled_path_is_built():
    # scripts/setup.sh (pip install -e .) builds it; ingest would fall back to the reference
    assert fastpath.AVAILABLE, fastpath.UNAVAILABLE
    assert fastpath.module().REVISION == fastpath.REVISION


# ---- a fleet: (device id, agency, status, officer, gateways) ------------------------------------------

_FLEET = [
    (101, AGENCY, "active", 1, frozenset()),
    (102, AGENCY, "active", 2, frozenset()),
    (103, AGENCY, "active", 3, frozenset({GATEWAY})),     # served by registered gateways
    (104, AGENCY, "active", 4, frozenset({"gw-other"})),  # ... of which ours is not one
    (105, AGENCY, "retired", 5, frozenset()),
    (106, AGENCY, "active", None, frozenset()),           # unassigned
    (107, OTHER_AGENCY, "active", 7, frozenset()),
]
_KEYS = {device: os.urandom(F.KEY_LEN) for device, *_ in _FLEET}
_UNKNOWN = 999


def _registry(compiled: bool = True) -> DeviceRegistry:
    """The fleet, its replay windows the compiled ones or (``compiled=False``) firmware.frame's."""
    window = fastpath.module().ReplayWindow if compiled else F.ReplayGuard
    registry = DeviceRegistry(engine=None, secret="unused: no database in these tests")
    for device, agency, status, officer, gateways in _FLEET:
        registry.devices[device] = DeviceRecord(device, agency, F.DeviceKeys(_KEYS[device]), status, "chest", officer,
                                                None if officer is None else f"Officer {officer}", None,
                                                replay=window(), acked=window(), gateways=gateways)
    return registry


# ---- random reads --------------------------------------------------------------------------------------

_KIND = {F.TYPE_TELEMETRY: "telemetry", F.TYPE_EVENT: "event", F.TYPE_STATUS: "status", F.TYPE_COMMAND: "status"}


@st.composite
def _payload(draw, frame_type):
    if draw(st.integers(0, 9)) == 0:  # anything at all: the tag is good, the payload is not (mostly)
        return draw(st.binary(max_size=F.MAX_PAYLOAD_LEN))
    if frame_type == F.TYPE_TELEMETRY:
        n = draw(st.integers(1, F.MAX_SAMPLES))
        ppg = draw(st.lists(st.integers(0, F.PPG_LIMIT), min_size=n, max_size=n))
        accel = draw(st.lists(st.tuples(*[st.integers(-F.ACCEL_LIMIT_MG, F.ACCEL_LIMIT_MG)] * 3), min_size=n, max_size=n))
        payload = bytearray(F.encode_telemetry(draw(st.sampled_from([25, 50])), ppg, accel, draw(st.integers(0, 255))))
        damage = draw(st.sampled_from(["none"] * 6 + ["rate0", "count", "cut"]))
        if damage == "rate0":
            payload[0] = 0
        elif damage == "count":
            payload[1] = draw(st.sampled_from([0, n + 1, F.MAX_SAMPLES + 1]))
        elif damage == "cut":
            payload = payload[:draw(st.integers(0, len(payload) - 1))]
        return bytes(payload)
    if frame_type == F.TYPE_EVENT:
        return F.encode_event(draw(st.sampled_from(sorted(F.EVENT_NAMES))), draw(st.integers(0, 0xFFFF)),
                              draw(st.integers(0, 3)))
    if frame_type == F.TYPE_STATUS:
        return F.encode_status(draw(st.integers(0, 100)), draw(st.integers(0, 0xFFFF)), (1, 2, 3),
                               draw(st.integers(0, 7)), draw(st.integers(0, 1000)))
    return F.encode_command(F.COMMAND_TIME_SYNC)


@st.composite
def _message(draw, sent):
    """One message of a read; ``sent`` holds what was sent before (for replays)."""
    if sent and draw(st.integers(0, 7)) == 0:
        return draw(st.sampled_from(sent))  # the same bytes again: a replay (or a redelivery)
    device = draw(st.sampled_from([d for d, *_ in _FLEET] + [_UNKNOWN]))
    frame_type = draw(st.sampled_from([F.TYPE_TELEMETRY] * 4 + [F.TYPE_EVENT, F.TYPE_STATUS, F.TYPE_COMMAND]))
    flags = draw(st.sampled_from([F.FLAG_ENCRYPTED] * 4 + [0, F.FLAG_ENCRYPTED | F.FLAG_BACKFILL,
                                                           F.FLAG_ENCRYPTED | F.FLAG_CLOCK_UNSYNCED]))
    seq = draw(st.integers(0, 40) | st.integers(0, 0xFFFFFFFF))
    time_ms = draw(st.just(T0_MS) | st.integers(0, 2**64 - 1))
    key = _KEYS.get(device, _KEYS[101])
    if draw(st.integers(0, 11)) == 0:
        key = os.urandom(F.KEY_LEN)  # a wrong key
    frame = bytearray(F.seal(F.DeviceKeys(key), frame_type, device, seq, time_ms, draw(_payload(frame_type)), flags))
    damage = draw(st.sampled_from(["none"] * 10 + ["flip", "cut", "extend", "garbage", "bytearray"]))
    if damage == "flip":
        i = draw(st.integers(0, len(frame) - 1))
        frame[i] ^= 1 << draw(st.integers(0, 7))
    elif damage == "cut":
        frame = frame[:draw(st.integers(0, len(frame) - 1))]
    elif damage == "extend":
        frame += draw(st.binary(min_size=1, max_size=40))
    elif damage == "garbage":
        frame = bytearray(draw(st.binary(max_size=300)))
    payload = bytearray(frame) if damage == "bytearray" else bytes(frame)
    topic_damage = draw(st.sampled_from(["none"] * 10 + ["kind", "device", "gateway", "agency", "down", "nonsense"]))
    kind = _KIND[frame_type]
    topic_device, gateway, agency = device, GATEWAY, AGENCY if device != 107 else OTHER_AGENCY
    if topic_damage == "kind":
        kind = draw(st.sampled_from(topics.UPLINK_KINDS))
    elif topic_damage == "device":
        topic_device = draw(st.sampled_from([101, 102, _UNKNOWN]))
    elif topic_damage == "gateway":
        gateway = "gw-other"
    elif topic_damage == "agency":
        agency = OTHER_AGENCY if agency == AGENCY else AGENCY
    topic = topics.uplink(agency, gateway, topic_device, kind)
    if topic_damage == "down":
        topic = topics.downlink(agency, gateway, topic_device)
    elif topic_damage == "nonsense":
        topic = draw(st.sampled_from(["", "vigil", "vigil/x/gw/y/up/notanumber/telemetry", "a/b/c/d/e/f/g"]))
    props = draw(st.sampled_from([None, {"lat": "51.5", "lon": "-0.12"}, {"lat": "x", "lon": "1"},
                                  {"lat": "91", "lon": "0", "loc_source": "gps"}]))
    message = (topic, payload, props, draw(st.integers(0, 65535)))
    sent.append(message)
    return message


@st.composite
def _reads(draw):
    sent: list = []
    return [draw(st.lists(_message(sent), min_size=1, max_size=30)) for _ in range(draw(st.integers(1, 4)))]


# ---- comparison ----------------------------------------------------------------------------------------


def _same(a, b) -> None:
    assert type(a) is type(b), (a, b)
    if isinstance(a, FrameRejected):
        assert (a.reason, a.detail) == (b.reason, b.detail)
    elif isinstance(a, Poisoned):
        assert (type(a.error), str(a.error)) == (type(b.error), str(b.error))
    else:
        assert isinstance(a, VerifiedFrame)
        assert a.device.device_id == b.device.device_id and a.device is not b.device  # each path its own registry
        assert (a.gateway, a.location) == (b.gateway, b.location)
        assert vars(a.header) == vars(b.header)
        if a.header.frame_type == F.TYPE_TELEMETRY:
            assert a.decoded[:2] == b.decoded[:2]
            for x, y in zip(a.decoded[2:], b.decoded[2:]):
                assert (x.dtype, x.shape) == (y.dtype, y.shape)
                assert np.array_equal(x, y)
        else:
            assert a.decoded == b.decoded


def _windows(registry: DeviceRegistry) -> dict:
    return {device: (record.replay.state(), record.acked.state()) for device, record in registry.devices.items()}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(_reads(), st.booleans())
def test_compiled_path_equals_the_reference(reads, replaying):
    reference = FrameVerifier(_registry(compiled=False), compiled=False)
    compiled = FrameVerifier(_registry(), compiled=True)
    assert compiled.compiled and not reference.compiled
    for read in reads:
        want = reference.verify(read, replaying)
        got = compiled.verify(read, replaying)
        assert len(got) == len(want) == len(read)
        for a, b in zip(want, got):
            _same(a, b)
        # then acknowledged to the broker (as handle_batch hands them: None where refused): the acked
        # windows and the devices to save
        reference._registry.acknowledged_reference([r if isinstance(r, VerifiedFrame) else None for r in want])
        compiled._registry.acknowledged([r if isinstance(r, VerifiedFrame) else None for r in got])
        assert _windows(compiled._registry) == _windows(reference._registry)
        assert compiled._registry.take_acked_changes() == reference._registry.take_acked_changes()


def test_the_random_reads_cover_acceptance_and_every_refusal():
    # the property above would pass vacuously if the strategy never produced these
    seen: dict[str, int] = {}

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(_reads())
    def run(reads):
        verifier = FrameVerifier(_registry(), compiled=True)
        for read in reads:
            for result in verifier.verify(read):
                key = result.reason if isinstance(result, FrameRejected) else type(result).__name__
                seen[key] = seen.get(key, 0) + 1

    run()
    for reason in ("VerifiedFrame", "bad_tag", "replayed", "bad_payload", "truncated", "bad_length", "topic_mismatch",
                   "unknown_device", "wrong_agency", "retired_device", "unassigned_device", "gateway_not_serving",
                   "bad_topic"):
        assert seen.get(reason), (reason, seen)


def test_a_new_key_for_a_device_is_used_at_once():
    # the compiled path keeps each device's hashed key pads; a registry reload with a new key replaces them
    registry = _registry()
    verifier = FrameVerifier(registry, compiled=True)
    topic = topics.uplink(AGENCY, GATEWAY, 101, "event")
    event = F.encode_event(F.EVENT_SOS)
    [first] = verifier.verify([(topic, F.seal(F.DeviceKeys(_KEYS[101]), F.TYPE_EVENT, 101, 1, T0_MS, event), None)])
    assert isinstance(first, VerifiedFrame)
    new_key = os.urandom(F.KEY_LEN)
    registry.devices[101].keys = F.DeviceKeys(new_key)
    old, new = verifier.verify([(topic, F.seal(F.DeviceKeys(_KEYS[101]), F.TYPE_EVENT, 101, 2, T0_MS, event), None),
                                (topic, F.seal(F.DeviceKeys(new_key), F.TYPE_EVENT, 101, 3, T0_MS, event), None)])
    assert isinstance(old, FrameRejected) and old.reason == "bad_tag"
    assert isinstance(new, VerifiedFrame) and new.header.seq == 3


_SEQ = st.integers(-1, 300) | st.integers(0, 0xFFFFFFFF)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from([1, 63, 64, 65, 200, F.REPLAY_WINDOW]), st.integers(-1, 100),
       st.lists(st.tuples(st.sampled_from(["check", "accept", "accept", "accept", "restore"]), _SEQ,
                          st.integers(-1, 2**4200)), max_size=60))
def test_compiled_replay_window_is_the_guard(window, highest, ops):
    want, got = F.ReplayGuard(window, highest), fastpath.module().ReplayWindow(window, highest)
    for op, seq, seen in ops:
        if op == "restore":
            want.restore(seq, seen)
            got.restore(seq, seen)
        else:
            outcomes = []
            for guard in (want, got):
                try:
                    getattr(guard, op)(seq)
                    outcomes.append(None)
                except F.FrameError as exc:
                    outcomes.append((exc.reason, exc.detail))
            assert outcomes[0] == outcomes[1]
        assert want.state() == got.state()
        assert (want.window, want.highest) == (got.window, got.highest)


def test_the_registry_makes_compiled_windows():
    # a device first seen by this process, or seeded from the saved window, gets the compiled one
    from backend.ingest import replay_state

    record = DeviceRecord(1, AGENCY, F.DeviceKeys(_KEYS[101]), "active", "chest", 1, "Officer", None)
    assert type(record.replay) is type(record.acked) is fastpath.module().ReplayWindow
    saved = F.ReplayGuard()
    for seq in (5, 9, 700):
        saved.accept(seq)
    restored = replay_state.decode(*replay_state.encode(saved))
    assert type(restored) is fastpath.module().ReplayWindow and restored.state() == saved.state()


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=32, max_size=32), st.binary(max_size=300))
def test_compiled_hmac_is_hmac_sha256(key, msg):
    keys = F.DeviceKeys(key)
    pads = fastpath.module().KeyPads(keys)
    assert pads.mac(msg) == hmac.digest(keys.mac_key, msg, "sha256")


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=32, max_size=32), st.binary(max_size=F.MAX_PAYLOAD_LEN), st.sampled_from([0, F.FLAG_ENCRYPTED]),
       st.integers(0, 0xFFFFFFFF))
def test_compiled_open_frame_is_the_codecs(key, payload, flags, seq):
    keys = F.DeviceKeys(key)
    frame = F.seal(keys, F.TYPE_STATUS, 7, seq, T0_MS, payload, flags)
    pads = fastpath.module().KeyPads(keys)
    assert fastpath.module().open_frame(frame, pads) == F.open_frame(frame, keys)[1] == payload
    forged = frame[:-1] + bytes([frame[-1] ^ 0x80])
    assert fastpath.module().open_frame(forged, pads) is None
    with pytest.raises(F.FrameError):
        F.open_frame(forged, keys)


def test_ingest_says_which_path_it_runs_on(caplog):
    # the gauge in /metrics (and a warning at start-up when it is 0: the reference path)
    from backend.app.config import BackendSettings
    from backend.ingest.service import IngestService

    metrics = BackendMetrics()
    settings_ = BackendSettings(database_url="postgresql+asyncpg://vigil@127.0.0.1:1/none", mqtt_url="mqtt://127.0.0.1:1")
    IngestService(settings_, _registry(), alerts=None, metrics=metrics)
    assert metrics.registry.get_sample_value("vigil_ingest_compiled") == 1
    assert "reference path" not in caplog.text


# ---- the MQTT stream: plain PUBLISH packets taken by the compiled splitter ----------------------------


@st.composite
def _packet(draw) -> bytes:
    from backend.ingest.mqtt import encode_utf8, encode_varint

    kind = draw(st.sampled_from(["publish"] * 6 + ["props", "utf8", "qos0", "pingresp", "suback", "odd"]))
    if kind == "pingresp":
        return b"\xd0\x00"
    if kind == "suback":
        return b"\x90\x04\x00\x01\x00\x01"  # granted QoS 1
    if kind == "odd":  # a header that says more than follows, or a remaining length of five bytes
        return draw(st.sampled_from([b"\x32\xff\xff\xff\xff\x7f", b"\x32\x05\x00\x09ab", b"\x30\x01\x00"]))
    topic = draw(st.sampled_from(["vigil/a/gw/g/up/1/telemetry", "t", ""]))
    if kind == "utf8":
        topic = "vigil/é/gw/g/up/1/event"
    props = b"\x00"
    if kind == "props":
        props = b"\x26" + encode_utf8("lat") + encode_utf8("51.5") + b"\x26" + encode_utf8("lon") + encode_utf8("-0.1")
        props = encode_varint(len(props)) + props
    packet_id = b"" if kind == "qos0" else draw(st.integers(1, 65535)).to_bytes(2, "big")
    body = encode_utf8(topic) + packet_id + props + draw(st.binary(max_size=300))
    return bytes([0x30 if kind == "qos0" else 0x32]) + encode_varint(len(body)) + body


@settings(max_examples=300, deadline=None)
@given(st.lists(_packet(), max_size=40), st.lists(st.integers(1, 400), max_size=20))
def test_compiled_publish_splitter_equals_the_reference(packets, cuts):
    from backend.ingest.mqtt import UplinkSubscriber

    stream = b"".join(packets)
    chunks, pos = [], 0
    for cut in cuts + [len(stream)]:  # the stream as reads of random sizes
        if pos < len(stream):
            chunks.append(stream[pos:pos + cut])
            pos += cut
    reference = UplinkSubscriber("mqtt://127.0.0.1:1", "ref", compiled=False)
    compiled = UplinkSubscriber("mqtt://127.0.0.1:1", "fast")
    assert compiled._take_publishes is not None and reference._take_publishes is None
    for chunk in chunks:
        outcome = []
        for parser in (reference, compiled):
            try:
                outcome.append(parser.feed(chunk))
            except Exception as exc:  # noqa: BLE001 - malformed streams: the same error either way
                outcome.append((type(exc), str(exc)))
        assert outcome[0] == outcome[1]
        assert reference._buf == compiled._buf


def test_without_the_build_ingest_runs_the_reference_and_says_so():
    # a machine where the extension did not build: the import fails, ingest falls back loudly
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent("""
        import logging, sys
        sys.modules["backend.ingest._fastpath"] = None  # what an unbuilt extension looks like to import
        logging.basicConfig(level=logging.WARNING, format="%(name)s %(message)s")
        from backend.app.config import BackendSettings
        from backend.app.metrics import BackendMetrics
        from backend.ingest import fastpath
        from backend.ingest.service import FrameVerifier, IngestService
        from backend.ingest.registry import DeviceRecord, DeviceRegistry
        from firmware import frame as F
        metrics = BackendMetrics()
        settings = BackendSettings(database_url="postgresql+asyncpg://vigil@127.0.0.1:1/none", mqtt_url="mqtt://127.0.0.1:1")
        IngestService(settings, DeviceRegistry(None, "x"), alerts=None, metrics=metrics)
        print("gauge", metrics.registry.get_sample_value("vigil_ingest_compiled"))
        print("window", type(DeviceRecord(1, "a", F.DeviceKeys(bytes(32)), "active", "chest", 1, "o", None).replay).__name__)
        try:
            FrameVerifier(DeviceRegistry(None, "x"), compiled=True)
        except fastpath.CompiledPathUnavailable as exc:
            print("asked for:", exc)
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    assert run.returncode == 0, run.stderr
    assert "gauge 0.0" in run.stdout and "window ReplayGuard" in run.stdout
    assert "asked for: the compiled ingest path is not built" in run.stdout
    assert "ingest runs on the pure-Python reference path" in run.stderr and "scripts/setup.sh" in run.stderr
