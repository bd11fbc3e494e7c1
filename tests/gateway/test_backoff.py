"""gateway.backoff.retry_delay: the one reconnect backoff of the gateway and the backend."""
from __future__ import annotations

import random

import pytest

from backend.ingest.mqtt import RECONNECT_BASE_S, RECONNECT_CAP_S, reconnect_delay
from gateway.backoff import retry_delay


class TestRetryDelay:
    def test_no_attempt_waits_nothing(self):
        assert retry_delay(0, 0.25, 4.0, 0.9) == 0.0
        assert retry_delay(-3, 0.25, 4.0, 0.9) == 0.0

    def test_ceiling_doubles_from_the_base(self):
        ceilings = [retry_delay(a, 0.25, 100.0, 0.5) * 2 for a in range(1, 6)]
        assert ceilings == [0.25, 0.5, 1.0, 2.0, 4.0]

    def test_cap(self):
        assert retry_delay(5, 0.25, 1.0, 0.5) == 0.5
        assert retry_delay(10_000, 0.25, 1.0, 0.999) == pytest.approx(0.999)

    def test_full_jitter_spans_zero_to_the_ceiling(self):
        assert retry_delay(3, 0.25, 4.0, 0.0) == 0.0
        delays = [retry_delay(3, 0.25, 4.0, j / 100) for j in range(100)]
        assert delays == sorted(delays) and all(0.0 <= d < 1.0 for d in delays)

    def test_delays_stay_in_range_for_any_draw(self):
        rng = random.Random(7)
        for attempt in range(1, 40):
            ceiling = min(8.0, 0.05 * 2 ** (attempt - 1))
            for _ in range(20):
                assert 0.0 <= retry_delay(attempt, 0.05, 8.0, rng.random()) < ceiling

    def test_seeded_draws_replay_exactly(self):
        def delays(seed):
            rng = random.Random(seed)
            return [retry_delay(a, 0.5, 15.0, rng.random()) for a in range(1, 10)]

        assert delays(42) == delays(42)
        assert delays(42) != delays(43)

    @pytest.mark.parametrize("jitter", [-0.1, 1.0, 1.5])
    def test_raises_on_jitter_outside_unit_interval(self, jitter):
        with pytest.raises(ValueError, match="jitter"):
            retry_delay(1, 0.25, 4.0, jitter)


class TestBackendReconnectDelay:
    def test_first_retry_is_within_the_base(self):
        assert reconnect_delay(0, random.Random(1)) < RECONNECT_BASE_S

    def test_same_draws_as_before(self):
        # the uniform(0, ceiling) the backend drew before the one definition: same values
        for attempt in range(12):
            ceiling = min(RECONNECT_CAP_S, RECONNECT_BASE_S * 2 ** attempt)
            assert reconnect_delay(attempt, random.Random(attempt)) == random.Random(attempt).uniform(0, ceiling)
