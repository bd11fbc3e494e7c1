"""Detection without I/O: the window/hop scheduler with time passed in, batch equivalence of a
hop, and the decisions on simulated officers (fall then man-down; a car report never pages)."""
from __future__ import annotations

import numpy as np
import pytest

from backend.detection.hop import DecisionConfig, DeviceModelState, FallStepInput, HopInput, analyse, analyse_falls
from backend.detection.windows import DeviceStream, TelemetryChunk, WindowConfig
from gateway.sim.signals import SensorModel

RATE = 50
N = 20  # samples per frame
FRAME_MS = N * 1000 // RATE
T0_MS = 1_700_000_000_000


def chunk(k: int, ppg=None, accel=None, backfill=False, seq=None) -> TelemetryChunk:
    ppg = np.full(N, 480_000, np.int32) if ppg is None else ppg
    accel = np.tile(np.array([0, 1000, 0], np.int16), (N, 1)) if accel is None else accel
    return TelemetryChunk(k if seq is None else seq, T0_MS + k * FRAME_MS, RATE, ppg, accel, backfill)


class TestDeviceStream:
    def test_empty_is_not_due(self):
        s = DeviceStream(1, WindowConfig())
        assert not s.due() and s.release(0.0) == []

    def test_first_window_then_every_hop(self):
        s = DeviceStream(1, WindowConfig())
        first = -(-(8 * RATE + 2 * RATE - RATE) // N)  # frames to cover window + hop - feature step
        for k in range(first - 1):
            assert s.push(chunk(k), 0.0)
        assert not s.due()
        s.push(chunk(first - 1), 0.0)
        assert s.due()
        w = s.take_window()
        assert w.first and len(w.ppg) == 450 and w.end_ms == T0_MS + 450 * 20
        assert w.seq[-1] == first - 1 and not s.due()
        for k in range(first, first + 5):
            s.push(chunk(k), 0.0)
        assert s.due()
        w2 = s.take_window()
        assert not w2.first and w2.end_ms - w.end_ms == 2000

    def test_windows_hold_exactly_the_samples_also_across_the_ring_end(self):
        s = DeviceStream(1, WindowConfig(backlog_s=2.0))  # a small ring: 700 samples, wraps every 35 frames
        taken = 0
        for k in range(200):
            idx = np.arange(k * N, (k + 1) * N)
            accel = np.stack([idx % 1000, -(idx % 1000), idx % 7], axis=1).astype(np.int16)
            s.push(chunk(k, ppg=idx.astype(np.int32), accel=accel), 0.0)
            while s.due():
                w = s.take_window()
                want = np.arange(w.end_index - len(w.ppg), w.end_index)
                assert w.ppg.tolist() == want.tolist()
                assert w.accel_mg[:, 0].tolist() == (want % 1000).tolist() and w.accel_mg[:, 2].tolist() == (want % 7).tolist()
                assert w.seq.tolist() == (want // N).tolist()
                taken += 1
        assert taken == (200 * N - 450) // 100 + 1 and s.capacity < 200 * N

    def test_reorder_within_depth(self):
        s = DeviceStream(1, WindowConfig(reorder_frames=3))
        assert len(s.push(chunk(0), 0.0)) == 1
        assert s.push(chunk(2), 0.0) == []          # 1 is missing: wait
        assert s.push(chunk(3), 0.0) == []
        released = s.push(chunk(1), 0.0)
        assert [c.seq for c in released] == [1, 2, 3]
        assert s.counters.gaps_filled == 0 and s.counters.late_frames == 0

    def test_missing_frame_is_filled_after_the_wait(self):
        s = DeviceStream(1, WindowConfig(reorder_frames=3, reorder_wait_s=1.0, gap_fill_s=1.0))
        s.push(chunk(0), 0.0)
        assert s.push(chunk(2), 0.0) == []
        assert [c.seq for c in s.release(1.0)] == [2]  # waited long enough: the gap is filled
        assert s.counters.gaps_filled == 1 and s.counters.samples_filled == N
        assert s.total == 3 * N
        assert s.push(chunk(1), 1.1) == [] and s.counters.late_frames == 1
        assert [c.seq for c in s.take_late()] == [1] and s.take_late() == []  # still to be stored

    @pytest.mark.parametrize("backfill", [False, True])
    def test_next_frame_a_little_early_continues_the_stream(self, backfill):
        # a sampler slip: the device dates its next block one sample (20 ms) early. Found by the
        # fault bench: such a backfill frame was dropped as late (its samples never stored), a
        # live one restarted the windows as if the clock had jumped.
        s = DeviceStream(1, WindowConfig(reorder_frames=0))
        for k in range(5):
            s.push(chunk(k), 0.0)
        early = chunk(5, backfill=backfill)
        early = TelemetryChunk(early.seq, early.time_ms - 20, RATE, early.ppg, early.accel_mg, backfill)
        assert s.push(early, 0.0) == [early]
        assert s.total == 6 * N
        assert s.counters.late_frames == 0 and s.counters.restarts == 0 and s.counters.jitter_frames == 1
        s.push(chunk(6), 0.0)  # and the one after it, on time, is no gap
        assert s.counters.gaps_filled == 0 and s.total == 7 * N

    def test_an_old_frame_a_little_early_is_still_late(self):
        s = DeviceStream(1, WindowConfig(reorder_frames=0))
        for k in range(5):
            s.push(chunk(k), 0.0)
        again = chunk(4)  # seq already in the stream: late, whatever its time
        assert s.push(again, 0.0) == [] and s.counters.late_frames == 1 and s.total == 5 * N

    def test_a_newer_frame_far_earlier_is_a_clock_jump(self):
        s = DeviceStream(1, WindowConfig(reorder_frames=0))
        for k in range(5):
            s.push(chunk(k), 0.0)
        jumped = chunk(5)
        jumped = TelemetryChunk(5, jumped.time_ms - 3_600_000, RATE, jumped.ppg, jumped.accel_mg, False)
        assert s.push(jumped, 0.0) == [jumped]
        assert s.counters.clock_jumps == 1 and s.counters.jitter_frames == 0

    def test_a_late_frame_is_still_stored(self):
        """Acknowledged to the broker means kept: a frame too late for the windows still goes to
        the raw store (DeviceStreams hands it to RawRows), through push and through release."""
        from types import SimpleNamespace
        from backend.app.metrics import BackendMetrics
        from backend.detection.streams import DeviceStreams

        class Rows:  # the raw store's intake, recorded
            def __init__(self):
                self.seqs = []

            def released(self, device_id, chunks, now):
                self.seqs += [c.seq for c in chunks]

            def flush_paused(self, now):
                pass

        rows = Rows()
        streams = DeviceStreams(WindowConfig(reorder_frames=3, reorder_wait_s=1.0), None, None, rows, BackendMetrics())
        device = SimpleNamespace(device_id=7)

        def frame(k):
            c = chunk(k)
            header = SimpleNamespace(seq=k, time_ms=c.time_ms, flags=0)
            return SimpleNamespace(device=device, header=header, decoded=(RATE, 0, c.ppg, c.accel_mg))

        now = T0_MS / 1000
        streams.push(frame(0), now, False)
        streams.push(frame(2), now, False)
        streams.collect(now + 1.0)  # waited long enough: 2 released, the gap filled
        streams.push(frame(1), now + 1.1, False)  # too late for the windows
        assert streams.counters(7).late_frames == 1
        assert sorted(rows.seqs) == [0, 1, 2]

    def test_a_rate_the_detectors_do_not_run_at_is_stored_not_analysed(self):
        """A verified frame at 25 Hz (the fall features need 50 Hz; at 25 Hz the model raised,
        failing the round of every device): stored, never windowed, counted."""
        from types import SimpleNamespace
        from backend.app.metrics import BackendMetrics
        from backend.detection.streams import MODEL_RATES_HZ, DeviceStreams

        class Rows:  # the raw store's intake, recorded
            def __init__(self):
                self.got = []

            def released(self, device_id, chunks, now):
                self.got += [(device_id, c.seq, c.rate_hz) for c in chunks]

            def released_one(self, device_id, chunk, now):
                self.got.append((device_id, chunk.seq, chunk.rate_hz))

        rows, metrics = Rows(), BackendMetrics()
        streams = DeviceStreams(WindowConfig(), None, None, rows, metrics)

        def frame(device_id, k, rate):
            n = rate * FRAME_MS // 1000
            header = SimpleNamespace(seq=k, time_ms=T0_MS + k * FRAME_MS, flags=0)
            return SimpleNamespace(device=SimpleNamespace(device_id=device_id), header=header,
                                   decoded=(rate, 0, np.full(n, 480_000, np.int32), np.tile(np.array([0, 1000, 0], np.int16), (n, 1))))

        assert 25 not in MODEL_RATES_HZ and RATE in MODEL_RATES_HZ
        now = T0_MS / 1000
        for k in range(30):
            streams.push(frame(7, k, RATE), now, False)
            streams.push(frame(8, k, 25), now, False)
            streams.push_reference(frame(9, k, 25), now, False)
        assert 8 not in streams.by_device and 9 not in streams.by_device and streams.by_device[7].due()
        assert [s for d, s, r in rows.got if d == 8] == list(range(30)) and {r for d, _, r in rows.got if d == 8} == {25}
        assert metrics.detection_stream.labels("unsupported_rate")._value.get() == 60

    def test_long_gap_restarts_the_window(self):
        s = DeviceStream(1, WindowConfig(reorder_frames=0))
        for k in range(30):
            s.push(chunk(k), 0.0)
        s.push(chunk(30 + 10), 0.0)  # 4 s missing
        assert s.counters.restarts == 1 and s.total == N and not s.due()

    def test_stream_far_ahead_skips_windows_it_cannot_hold(self):
        s = DeviceStream(1, WindowConfig(backlog_s=4.0, reorder_frames=0))
        for k in range(200):  # 80 s of samples, nothing analysed
            s.push(chunk(k), 0.0)
        assert s.counters.skipped_windows > 0
        windows = []
        while s.due():
            windows.append(s.take_window())
        assert 1 <= len(windows) <= 3
        assert windows[-1].end_ms == T0_MS + s.total * 20 - (s.total - windows[-1].end_index) * 20

    def test_seq_at_names_the_frame_of_a_sample(self):
        s = DeviceStream(1, WindowConfig())
        for k in range(10):
            s.push(chunk(k, seq=100 + k), 0.0)
        assert s.seq_at(T0_MS + 3 * FRAME_MS + 5, -1) == 103
        assert s.seq_at(T0_MS - 10_000, -1) == -1

    def test_bad_config_raises(self):
        with pytest.raises(ValueError):
            WindowConfig(hop_s=3.0, feature_step_s=2.0)
        with pytest.raises(ValueError):
            WindowConfig(window_s=2.0, hop_s=4.0)


# ---- simulated officers through stream + hop -----------------------------------------------------


class Officer:
    """One simulated wearable feeding a stream, and its detection state."""

    def __init__(self, device_id: int, plan: list[tuple[str, float]], seed: int):
        self.stream = DeviceStream(device_id, WindowConfig(reorder_frames=0))
        self.state = DeviceModelState()
        model = SensorModel(np.random.default_rng(seed), RATE)
        self.chunks = []
        k = 0
        for activity, seconds in plan:
            for _ in range(int(round(seconds * RATE / N))):
                ppg, accel = model.block(N, activity)
                self.chunks.append(chunk(k, ppg.astype(np.int32), np.rint(accel).astype(np.int16)))
                k += 1


def fall_batches(streams: list[DeviceStream], placement: str) -> list[FallStepInput]:
    """The streams' due fall steps, in a batch per first-step-or-not (as DeviceStreams.collect)."""
    config = WindowConfig()
    falls = {True: [], False: []}
    for s in streams:
        while s.fall_due():
            f = s.take_fall_window()
            falls[f.first].append(f)
    return [FallStepInput(placement, RATE, config.samples(RATE)[0], None if first else config.fall_step_samples(RATE), f)
            for first, f in falls.items() if f]


def run_officers(officers: list[Officer], placement="chest", now_ms=None, config=DecisionConfig()):
    """Feed all chunks frame by frame; decide every due fall step, then analyse every due window,
    each in one batch per round (fall steps first, as DeviceStreams.collect orders them)."""
    alerts = {id(o): [] for o in officers}
    features = {id(o): [] for o in officers}
    by_device = {o.stream.device_id: o for o in officers}
    w, hop, step = WindowConfig().samples(RATE)
    k = 0
    while any(k < len(o.chunks) for o in officers):
        for o in officers:
            if k < len(o.chunks):
                o.stream.push(o.chunks[k], 0.0)
        k += 1
        for falls in fall_batches([o.stream for o in officers], placement):
            now = now_ms if now_ms is not None else max(win.wall_end_ms for win in falls.windows)
            states = [by_device[win.device_id].state for win in falls.windows]  # a suspicion arms the next hop
            for r in analyse_falls(falls, states, now, config):
                if r is not None:
                    alerts[id(by_device[r.device_id])] += r.alerts
        due = [o for o in officers if o.stream.due()]
        if not due:
            continue
        windows = [o.stream.take_window() for o in due]
        batch = HopInput(placement, RATE, w, hop, step, windows, [o.state for o in due], np.ones(len(due), bool))
        now = now_ms if now_ms is not None else max(win.wall_end_ms for win in windows)
        results, states = analyse(batch, now, config)
        for o, r, s in zip(due, results, states):
            o.state = s
            alerts[id(o)] += r.alerts
            features[id(o)] += r.features
    return [alerts[id(o)] for o in officers], [features[id(o)] for o in officers]


def test_fall_then_man_down_pages_fall_and_man_down_once():
    officer = Officer(1, [("walking", 12), ("fall", 50)], seed=3)
    (alerts,), (features,) = run_officers([officer])
    kinds = [a.kind for a in alerts]
    assert kinds == ["fall", "man_down"]
    fall, man_down = alerts
    assert fall.explanation["evidence"]["impact_g"] > 3 and fall.explanation["thresholds_version"]
    assert 12_000 <= fall.evidence_ms - T0_MS <= 13_500
    assert man_down.explanation["evidence"]["still_s"] >= 30 and "no motion" in man_down.explanation["summary"]
    # 1 Hz features: one row per second of device time after the first window
    times = np.diff([f.wall_ms for f in features])
    assert set(times.tolist()) == {1000}
    assert features[-1].posture == "lying" and features[-1].activity == "still"


def test_car_report_for_five_minutes_never_pages():
    officer = Officer(2, [("sitting_car", 300)], seed=5)
    (alerts,), (features,) = run_officers([officer])
    assert alerts == []
    assert {f.posture for f in features} == {"upright"}
    assert len(features) == 300 - 9 + 1


def test_device_left_on_a_table_never_pages():
    officer = Officer(3, [("walking", 10), ("off_body", 120)], seed=7)
    (alerts,), _ = run_officers([officer])
    assert alerts == []


def test_one_batch_equals_one_device_at_a_time():
    plans = [[("walking", 12), ("fall", 30)], [("running", 42)], [("sitting_car", 42)]]
    together = [Officer(10 + i, p, seed=i) for i, p in enumerate(plans)]
    alone = [Officer(10 + i, p, seed=i) for i, p in enumerate(plans)]
    a_alerts, a_features = run_officers(together)
    for i, o in enumerate(alone):
        (alerts,), (features,) = run_officers([o])
        assert [x.kind for x in alerts] == [x.kind for x in a_alerts[i]]
        assert len(features) == len(a_features[i])
        for f, g in zip(features, a_features[i]):
            assert (f.activity, f.posture, f.wall_ms) == (g.activity, g.posture, g.wall_ms)
            assert f.motion_energy == pytest.approx(g.motion_energy, abs=1e-4)
            assert (f.heart_rate is None) == (g.heart_rate is None)
            if f.heart_rate is not None:
                assert f.heart_rate == pytest.approx(g.heart_rate, abs=0.51)


def test_backfilled_fall_is_not_paged_but_a_man_down_still_in_progress_is():
    # everything analysed "10 minutes later": the fall is stale, man-down is never paged
    # from those windows; the next recent window pages it because it is still latched
    officer = Officer(4, [("walking", 12), ("fall", 50)], seed=3)
    late = T0_MS + 62_000 + 600_000
    (alerts,), _ = run_officers([officer], now_ms=late)
    assert alerts == []
    assert officer.state.man_down.phase[0] == 2 and not officer.state.man_down_paged
    more = Officer(4, [("fall", 4)], seed=9)
    for c in more.chunks:  # continue the same stream with live data
        c.time_ms += 62_000 - (62_000 % FRAME_MS)
    officer.chunks = more.chunks
    (alerts,), _ = run_officers([officer])
    assert [a.kind for a in alerts] == ["man_down"]


def test_model_states_kept_where_the_models_run_equal_states_passed_along_and_a_reset_rearms():
    """ModelStates (the detection worker's own states) gives the same pages as carrying each
    device's state by hand, and a reset re-arms a latched man-down alarm."""
    from backend.detection.hop import ModelStates

    by_hand = Officer(1, [("walking", 12), ("fall", 80)], seed=3)
    (expected,), _ = run_officers([by_hand])
    assert [a.kind for a in expected] == ["fall", "man_down"]

    officer = Officer(1, [("walking", 12), ("fall", 80)], seed=3)
    keeper = ModelStates()
    w, hop, step = WindowConfig().samples(RATE)
    pages, clear_next = [], False
    for c in officer.chunks:
        officer.stream.push(c, 0.0)
        falls = fall_batches([officer.stream], "chest")
        if not officer.stream.due():
            for batch in falls:
                for r in keeper.run([batch], frozenset(), batch.windows[-1].wall_end_ms, DecisionConfig())[0]:
                    pages += r.alerts if r is not None else []
            continue
        win = officer.stream.take_window()
        batch = HopInput("chest", RATE, w, hop, step, [win], [], np.ones(1, bool))
        resets = frozenset({1}) if clear_next else frozenset()
        clear_next = False
        *fall_results, results = keeper.run([*falls, batch], resets, win.wall_end_ms, DecisionConfig())
        pages += [a for batch_results in fall_results for r in batch_results if r is not None for a in r.alerts]
        for a in results[0].alerts:
            pages.append(a)
            clear_next = a.kind == "man_down" and len(pages) == 2  # a supervisor clears the first alarm
    kinds = [a.kind for a in pages]
    assert [(a.kind, a.evidence_ms) for a in pages[:2]] == [(a.kind, a.evidence_ms) for a in expected]
    # still lying after the reset: the alarm pages again once another 30 s of stillness passed
    assert kinds == ["fall", "man_down", "man_down"], kinds
    assert keeper.states[1].man_down_paged


def test_model_axes_are_the_turn_of_the_device_axes_in_g():
    from backend.detection.hop import DEVICE_TO_MODEL_AXES, to_model_g

    accel = np.random.default_rng(3).integers(-16000, 16000, (5, 450, 3)).astype(np.int16)
    got = to_model_g(accel)
    want = np.einsum("dsc,ck->dks", accel.astype(float), DEVICE_TO_MODEL_AXES) / 1000.0
    assert got.shape == (5, 3, 450) and got.flags.c_contiguous and np.array_equal(got, want)


@pytest.mark.parametrize("worker", ["inline", "thread", "process"])
async def test_one_batch_whose_models_raise_fails_alone(worker):
    """A model error in one batch (here: a placement the thresholds do not know) skips that batch's
    windows, counted and logged; the round's other batches are analysed (it used to skip the whole
    round: one odd device stopped fall and man-down detection for every device)."""
    from backend.app.metrics import BackendMetrics
    from backend.detection.rounds import RoundRunner

    s = DeviceStream(1, WindowConfig())
    k = 0
    while not s.due():
        s.push(chunk(k), 0.0)
        k += 1
    win = s.take_window()
    w, hop, step = WindowConfig().samples(RATE)
    good = HopInput("waist", RATE, w, hop, step, [win], [], np.ones(1, bool))
    bad = HopInput("nowhere", RATE, w, hop, step, [win], [], np.ones(1, bool))
    metrics = BackendMetrics()
    runner = RoundRunner(worker, DecisionConfig(), metrics)
    try:
        outcome = await runner.analyse([bad, good], frozenset(), win.wall_end_ms / 1000)
    finally:
        runner.shutdown()
    assert outcome is not None and len(outcome) == 2
    assert outcome[0] == [] and [r.device_id for r in outcome[1]] == [1]
    assert metrics.detection_failures._value.get() == 1
