"""Detection's fast paths give what the reference paths give: a replayed stream of frames from
simulated officers (a fall then man-down, reordering, a filled gap, a long gap, a late frame, a
clock jump, a frame dated a sample early, a backfill burst, an unsynced clock,
rings wrapping) goes through ``DeviceStreams.push`` (the usual frame straight into its ring)
and ``DeviceStreams.push_reference`` (every frame through the reorder queue), and both give the
same windows, counters, raw rows, features and alerts, round by round."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from backend.app.metrics import BackendMetrics
from backend.detection.hop import DecisionConfig, HeartRateState, ManDownState, ModelStates, StrainState, row, rows
from backend.detection.raw import RawRows
from backend.detection.streams import DeviceStreams
from backend.detection.windows import FallWindow, WindowConfig
from firmware import frame as F
from gateway.sim.signals import SensorModel

T0_MS = 1_700_000_000_000
SLOT_MS = 400           # a frame per device every 0.4 s
SLOTS = 260             # 104 s: every ring (70 s of backlog) wraps
ROUND_SLOTS = 5         # a detection round every 2 s


class Rows:
    """The raw writer's intake, recorded."""

    def __init__(self):
        self.rows = []

    def add(self, row, stamp):
        self.rows.append((repr(row[:5] + row[7:]), row[5].tolist(), row[6].tolist(), stamp))


class Registry:
    def __init__(self, devices):
        self.devices = {d: SimpleNamespace(device_id=d, officer_id=5000 + d, placement="waist") for d in devices}

    def get(self, device_id):
        return self.devices.get(device_id)


def _plan(device_id: int) -> tuple[int, list[tuple[str, float]]]:
    if device_id in (1, 2):  # a fall, then lying still: fall and man-down pages
        return 50, [("walking", 14), ("fall", 90)]
    if device_id == 10:
        return 50, [("running", 40), ("standing", 64)]
    return 50, [("walking", 30), ("sitting_car", 30), ("running", 44)]


def _frames(device_id: int, seed: int) -> list[tuple[int, object]]:
    """(slot it arrives in, frame) of one simulated wearable, with its scenario's faults."""
    rate, plan = _plan(device_id)
    model = SensorModel(np.random.default_rng(seed), rate)
    n = rate * SLOT_MS // 1000
    device = SimpleNamespace(device_id=device_id)
    out = []
    k = 0
    for activity, seconds in plan:
        for _ in range(int(round(seconds * 1000 / SLOT_MS))):
            ppg, accel = model.block(n, activity)
            time_ms, flags, slot = T0_MS + k * SLOT_MS, 0, k
            if device_id == 2 and k % 9 == 4:
                slot = k + 1                      # reordered: arrives after the next one
            if device_id == 3 and k in (40, *range(120, 131)):
                k += 1
                continue                          # lost: a filled gap, then a long one (a restart)
            if device_id == 4 and k == 50:
                slot = k + 6                      # late: after the reorder wait
            if device_id == 5 and k >= 100:
                time_ms -= 3_600_000              # the clock went back an hour
            if device_id == 6 and k in (60, 61, 150):
                time_ms -= 20                     # dated a sample early (a sampler slip)
            if device_id == 7 and 70 <= k < 85:
                slot, flags = 90, F.FLAG_BACKFILL  # a link outage, then its ring's backfill burst
            if device_id == 8:
                time_ms, flags = 5_000 + k * SLOT_MS, F.FLAG_CLOCK_UNSYNCED
            header = SimpleNamespace(seq=k + 1, time_ms=time_ms, flags=flags)
            decoded = (rate, 0, ppg.astype(np.int32), np.rint(accel).astype(np.int16))
            out.append((slot, SimpleNamespace(device=device, header=header, decoded=decoded)))
            k += 1
    return out


def _window_fields(w) -> tuple:
    if isinstance(w, FallWindow):
        return (w.device_id, w.end_index, w.end_ms, w.wall_end_ms, w.first, w.backfill, w.last_seq, w.accel_mg.tolist())
    return (w.device_id, w.end_index, w.end_ms, w.wall_end_ms, w.first, w.backfill, w.last_frame_wall_ms,
            w.ppg.tolist(), w.accel_mg.tolist(), w.seq.tolist())


def _replay(push: str) -> dict:
    devices = list(range(1, 11))
    registry = Registry(devices)
    writer = Rows()
    raw_rows = RawRows(writer, registry, 2.0)
    streams = DeviceStreams(WindowConfig(), registry, SimpleNamespace(devices={}), raw_rows, BackendMetrics())
    keeper = ModelStates()
    arrivals: dict[int, list] = {}
    for d in devices:
        for slot, frame in _frames(d, seed=d):
            arrivals.setdefault(slot, []).append(frame)
    windows, results, paged = [], [], []
    for slot in range(SLOTS + 10):
        now = (T0_MS + slot * SLOT_MS) / 1000 + 0.05
        for frame in arrivals.get(slot, []):
            getattr(streams, push)(frame, now, bool(frame.header.flags & F.FLAG_BACKFILL))
        if slot % ROUND_SLOTS:
            continue
        batches, resets = streams.collect(now)
        for batch in batches:
            windows += [_window_fields(w) for w in batch.windows]
        for batch_results in keeper.run(batches, resets, int(now * 1000), DecisionConfig()):
            results += [repr(r) for r in batch_results]
            paged += [(r.device_id, a.kind) for r in batch_results if r is not None for a in r.alerts]
    raw_rows.flush()
    counters = {d: streams.counters(d) for d in devices}
    return {"windows": windows, "results": results, "paged": paged, "raw": writer.rows, "counters": counters}


@pytest.fixture(scope="module")
def replays():
    return _replay("push_reference"), _replay("push")


def test_the_replay_covers_its_scenarios(replays):
    reference, _ = replays
    c = reference["counters"]
    assert c[3].gaps_filled >= 1 and c[3].restarts >= 1
    assert c[4].late_frames == 1 and c[5].clock_jumps == 1 and c[6].jitter_frames >= 2
    assert c[7].restarts == 1 and c[7].late_frames == 15  # the burst came after the stream went on
    assert sum(x.skipped_windows for x in c.values()) == 0
    assert {(1, "fall"), (1, "man_down"), (2, "fall"), (2, "man_down")} <= set(reference["paged"])
    # every frame's samples are stored once, lost frames aside, late ones included
    stored = sum(len(ppg) for _, ppg, _, _ in reference["raw"])
    sent = sum(len(f.decoded[2]) for d in range(1, 11) for _, f in _frames(d, seed=d))
    assert stored == sent
    assert len(reference["windows"]) > 400


def test_fast_path_equals_the_reference_path(replays):
    reference, fast = replays
    assert fast["counters"] == reference["counters"]
    assert fast["windows"] == reference["windows"]
    assert fast["raw"] == reference["raw"]
    assert fast["results"] == reference["results"]
    assert fast["paged"] == reference["paged"]


@pytest.mark.parametrize("cls", [HeartRateState, ManDownState, StrainState])
def test_rows_of_a_batch_state_equal_row_by_row(cls):
    rng = np.random.default_rng(1)
    state = cls.initial(4)
    state = cls(*[rng.standard_normal(getattr(state, f).shape).astype(getattr(state, f).dtype)
                  for f in state.__dataclass_fields__])
    split = rows(state)
    assert len(split) == 4
    for i, one in enumerate(split):
        want = row(state, i)
        for f in state.__dataclass_fields__:
            assert getattr(one, f).shape == getattr(want, f).shape
            assert np.array_equal(getattr(one, f), getattr(want, f))


def test_a_device_no_longer_analysed_keeps_its_own_state_not_its_last_batch():
    """A device's model state is a view of the batch that last analysed it; once it is no longer
    analysed its state is copied out (the same values), so it does not keep the batch's arrays."""
    from backend.detection.hop import DETACH_AFTER_CALLS, HopInput
    from backend.detection.windows import DeviceStream, TelemetryChunk

    config = WindowConfig()
    w, hop, step = config.samples(50)
    streams = {d: DeviceStream(d, config) for d in (1, 2)}
    model = SensorModel(np.random.default_rng(4), 50)

    def window(d, k):
        while not streams[d].due():
            ppg, accel = model.block(20, "walking")
            s = streams[d]
            s.push(TelemetryChunk(s.total // 20 + 1, T0_MS + s.total * 20, 50, ppg.astype(np.int32),
                                  np.rint(accel).astype(np.int16), False), 0.0)
        return streams[d].take_window()

    keeper = ModelStates()

    def run(devices):
        wins = [window(d, 0) for d in devices]
        keeper.run([HopInput("waist", 50, w, hop, step, wins, [], np.ones(len(wins), bool))], frozenset(),
                   T0_MS + 10**9, DecisionConfig())

    run([1, 2])
    before = keeper.states[2]
    posterior = before.hr.posterior.copy()
    assert before.hr.posterior.base is not None  # a view of the batch
    for _ in range(2 * DETACH_AFTER_CALLS):  # swept every DETACH_AFTER_CALLS calls
        run([1])
    after = keeper.states[2]
    assert after.hr.posterior.base is None and after.man_down.phase.base is None and after.strain.last_time.base is None
    assert np.array_equal(after.hr.posterior, posterior) and after.hr.posterior.shape == (1, posterior.shape[1])
    assert keeper.states[1].hr.posterior.base is not None  # still analysed: still a view
