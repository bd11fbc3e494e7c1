"""The device core: frames in order (events first), resent until acknowledged, backfill
oldest-first, sequence numbers that never repeat across reboots, authenticated commands; and
the crash-safe configuration file."""
import os

from firmware import config as C
from firmware import core
from firmware import frame as F
from fw_portable_helpers import MemoryStore, fresh_dir, raises

KEY = bytes(range(1, 33))
KEYS = F.DeviceKeys(KEY)
DEVICE = 0x0000BEEF


def _core(store=None, block=20, buffer_s=320, cmd_seq=-1, persist_cmd=None):
    store = store or MemoryStore()
    seq = C.SeqAllocator(store.limit, store.persist, block=64)
    return core.DeviceCore(DEVICE, KEYS, seq, block_samples=block, buffer_s=buffer_s,
                           cmd_seq=cmd_seq, persist_cmd_seq=persist_cmd), store


def _block(i, n=20):
    return [100000 + i * 100 + k for k in range(n)], [(k, -k, 1000 + i) for k in range(n)]


def _drain(c, now):
    out = []
    while True:
        nxt = c.next_uplink(now)
        if nxt is None:
            return out
        ch, frame = nxt
        header, payload = F.open_frame(frame, KEYS)
        out.append((ch, header, payload))
        c.uplink_sent(now)


def test_events_go_ahead_of_telemetry_and_status():
    c, _ = _core()
    for i in range(3):
        c.add_block(i * 400, *_block(i))
    c.update_status(1300, 80, 3900, F.STATUS_SKIN_CONTACT)
    c.raise_event(F.EVENT_SOS, 1, 0, 1300)
    out = _drain(c, 1300)
    types = [h.frame_type for _, h, _ in out]
    assert types == [F.TYPE_EVENT, F.TYPE_STATUS, F.TYPE_TELEMETRY, F.TYPE_TELEMETRY, F.TYPE_TELEMETRY]
    assert out[0][0] == core.CH_EVENT and out[1][0] == core.CH_TELEMETRY
    seqs = [h.seq for _, h, _ in out]
    assert len(set(seqs)) == len(seqs)
    assert F.decode_event(out[0][2]) == (F.EVENT_SOS, 1, 0)
    assert all(h.flags & F.FLAG_CLOCK_UNSYNCED for _, h, _ in out)


def test_unacknowledged_events_are_resent_with_backoff_until_acked():
    c, _ = _core()
    seq = c.raise_event(F.EVENT_MANDOWN_ALARM, 1, 30, 0)
    sends = []
    t = 0
    while t <= 20000:
        nxt = c.next_uplink(t)
        if nxt is not None and nxt[0] == core.CH_EVENT:
            sends.append(t)
            c.uplink_sent(t)
        t += 100
    assert sends[:5] == [0, 1000, 3000, 7000, 15000]
    frames = set()
    # the same sealed bytes each time: the backend's replay window drops the duplicates
    c.outbox.link_up(20000)
    frames.add(c.next_uplink(20000)[1])
    c.uplink_sent(20000)
    c.outbox.link_up(20100)
    frames.add(c.next_uplink(20100)[1])
    assert len(frames) == 1
    ack = F.seal(KEYS, F.TYPE_COMMAND, DEVICE, 7, 0, F.encode_command(F.COMMAND_EVENT_ACK, 0, seq & 0xFFFF))
    assert c.handle_command(ack, 20200) == (F.COMMAND_EVENT_ACK, 0, seq & 0xFFFF)
    assert len(c.outbox) == 0 and c.next_uplink(30000) is None


def test_ring_overflow_counts_drops_and_backfills_oldest_first_flagged():
    c, _ = _core(buffer_s=4)  # 10 blocks of 0.4 s
    assert c.ring.capacity == 10
    for i in range(25):  # 10 s with the link down
        c.add_block(i * 400, *_block(i))
    assert c.dropped_samples == 15 * 20
    c.update_status(12000, 50, 3800, 0)
    out = _drain(c, 12000)  # the link is back two seconds later
    assert F.decode_status(out[0][2])[4] == 300  # the status frame reports the loss
    tele = [(h, p) for _, h, p in out if h.frame_type == F.TYPE_TELEMETRY]
    assert [h.time_ms for h, _ in tele] == [i * 400 for i in range(15, 25)]  # oldest first
    assert all(h.flags & F.FLAG_BACKFILL for h, _ in tele)
    assert F.decode_telemetry(tele[0][1])[2] == _block(15)[0]
    # live data sent at once is not flagged as backfill
    c.add_block(12400, *_block(26))
    live = _drain(c, 12400 + 400 + 50)
    assert not live[0][1].flags & F.FLAG_BACKFILL


def test_a_failed_notification_is_retried_with_the_same_frame():
    c, _ = _core()
    c.add_block(0, *_block(0))
    first = c.next_uplink(500)
    again = c.next_uplink(520)  # the radio refused it (no uplink_sent)
    assert first == again and len(c.ring) == 1
    c.uplink_sent(520)
    assert len(c.ring) == 0


def test_time_sync_command_moves_frames_to_epoch_time():
    c, _ = _core()
    epoch = 1767225600000
    sync = F.seal(KEYS, F.TYPE_COMMAND, DEVICE, 1, epoch, F.encode_command(F.COMMAND_TIME_SYNC))
    c.handle_command(sync, 5000)
    c.raise_event(F.EVENT_SOS, 1, 0, 6000)
    h = _drain(c, 6000)[0][1]
    assert h.time_ms == epoch + 1000 and not h.flags & F.FLAG_CLOCK_UNSYNCED


def test_commands_must_be_authentic_addressed_and_fresh():
    persisted = []
    c, _ = _core(cmd_seq=10, persist_cmd=persisted.append)
    good = F.seal(KEYS, F.TYPE_COMMAND, DEVICE, 11, 0, F.encode_command(F.COMMAND_HELP_COMING, 1))
    assert c.handle_command(good, 0) == (F.COMMAND_HELP_COMING, 1, 0)
    assert persisted == [11]
    assert raises(F.FrameError, c.handle_command, good, 1).reason == "replayed"
    old = F.seal(KEYS, F.TYPE_COMMAND, DEVICE, 10, 0, F.encode_command(F.COMMAND_HELP_COMING))
    assert raises(F.FrameError, c.handle_command, old, 1).reason == "replayed"  # from before a reboot
    forged = F.seal(F.DeviceKeys(bytes(32)), F.TYPE_COMMAND, DEVICE, 12, 0, F.encode_command(F.COMMAND_HELP_COMING))
    assert raises(F.FrameError, c.handle_command, forged, 1).reason == "bad_tag"
    other = F.seal(KEYS, F.TYPE_COMMAND, DEVICE + 1, 13, 0, F.encode_command(F.COMMAND_HELP_COMING))
    raises(F.FrameError, c.handle_command, other, 1)
    raises(F.FrameError, c.handle_command, b"\x00" * 5, 1)
    assert persisted == [11]


def test_sequence_numbers_never_repeat_across_reboots_and_crashes():
    store = MemoryStore()
    seen = set()
    for boot in range(5):
        c, _ = _core(store)
        for i in range(30 + boot * 17):  # each boot uses a different amount, then "crashes"
            c.raise_event(F.EVENT_FALL_SUSPECTED, 2, 0, i)
            c.outbox.entries.clear()
        seq_used = [c.seq.next() for _ in range(3)]
        for s in seq_used:
            assert s not in seen
            seen.add(s)
        # every number handed out lies below the limit that was on flash at the time
        assert max(seq_used) < store.limit
    assert store.writes >= 5


def test_no_sequence_number_without_a_reservation_on_flash():
    store = MemoryStore()
    seq = C.SeqAllocator(0, store.persist, block=4)
    assert [seq.next() for _ in range(4)] == [0, 1, 2, 3]
    store.fail = True
    raises(OSError, seq.next)
    raises(OSError, seq.next)
    store.fail = False
    assert seq.next() == 4 and store.limit == 8


def test_config_round_trip_and_atomic_replace():
    d = fresh_dir()
    store = C.ConfigStore(d + "/vigil.json")
    raises(C.ConfigError, store.load)
    rec = C.new_record(DEVICE, KEY.hex())
    store.save(rec)
    assert store.load() == rec
    rec["seq_limit"] = 4096
    store.save(rec)
    assert store.load()["seq_limit"] == 4096
    assert "vigil.json.tmp" not in os.listdir(d)


def test_config_survives_a_crash_at_every_step_of_a_write():
    d = fresh_dir()
    store = C.ConfigStore(d + "/vigil.json")
    rec = C.new_record(DEVICE, KEY.hex())
    store.save(rec)
    new = C.new_record(DEVICE, KEY.hex(), rec)
    new["seq_limit"] = 8192
    data = C.encode(new)
    # 1. crash while writing the temporary file: a torn tmp, the old file intact
    with open(store.tmp_path, "wb") as f:
        f.write(data[: len(data) // 2])
    assert store.load()["seq_limit"] == 0
    assert "vigil.json.tmp" not in os.listdir(d)
    # 2. crash after the old file was removed (FAT path), before the rename
    with open(store.tmp_path, "wb") as f:
        f.write(data)
    os.remove(store.path)
    assert store.load()["seq_limit"] == 8192
    assert os.listdir(d) == ["vigil.json"]


def test_config_detects_edits_and_bad_values():
    d = fresh_dir()
    store = C.ConfigStore(d + "/vigil.json")
    store.save(C.new_record(DEVICE, KEY.hex()))
    with open(store.path) as f:
        text = f.read()
    with open(store.path, "w") as f:
        f.write(text.replace('"seq_limit": 0', '"seq_limit": 1'))
    assert raises(C.ConfigError, store.load).reason == "corrupt"
    raises(C.ConfigError, C.new_record, DEVICE, "abcd")
    bad = C.new_record(DEVICE, KEY.hex())
    bad["settings"] = {"prealert_s": 1}
    raises(C.ConfigError, C.encode, bad)


def test_reprovisioning_keeps_the_reservation_of_the_same_key_only():
    rec = C.new_record(DEVICE, KEY.hex())
    rec["seq_limit"] = 12288
    rec["cmd_seq"] = 44
    rec["settings"] = {"prealert_s": 25}
    same = C.new_record(DEVICE, KEY.hex().upper(), rec)
    assert same["seq_limit"] == 12288 and same["cmd_seq"] == 44 and same["settings"] == {"prealert_s": 25}
    fresh = C.new_record(DEVICE, bytes(32).hex(), rec)
    assert fresh["seq_limit"] == 0 and fresh["cmd_seq"] == -1
    assert C.settings_of(same)["prealert_s"] == 25 and C.settings_of(same)["alarm_s"] == 30
