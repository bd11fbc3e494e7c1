"""The live hub's event ids: increasing, and a client resuming after a backend restart with an
id from the previous process gets what the new process has published since."""
import asyncio

import pytest

from backend.incidents.hub import FellBehind, LiveHub


class TestLiveHub:
    def test_resume_within_a_process(self):
        hub = LiveHub(now=lambda: 1000.0)
        first = hub.publish("a", "alert", {"n": 1})
        hub.publish("a", "alert", {"n": 2})
        hub.publish("b", "alert", {"n": 3})
        _, backlog = hub.subscribe("a", first["id"])
        assert [e["data"]["n"] for e in backlog] == [2]

    def test_resume_across_a_restart(self):
        before = LiveHub(now=lambda: 1000.0)
        seen = [before.publish("a", "alert", {"n": i}) for i in range(5)][-1]["id"]
        after = LiveHub(now=lambda: 1001.0)  # the restarted backend, a second later
        after.publish("a", "alert", {"n": 10})
        _, backlog = after.subscribe("a", seen)
        assert [e["data"]["n"] for e in backlog] == [10]

    def test_ids_fit_a_javascript_number(self):
        hub = LiveHub()
        assert hub.publish("a", "alert", {})["id"] < 2**53


class TestBursts:
    """Issue 15 finding 9: one burst of >1,000 officer-status changes dropped a subscriber, which
    then waited forever. Statuses coalesce per officer; the subscriber keeps every alert."""

    async def test_a_status_burst_keeps_the_subscriber_and_the_latest_status_of_each_officer(self):
        hub = LiveHub()
        sub, _ = hub.subscribe("a")
        hub.publish("a", "alert", {"id": "before"})
        for i in range(5000):
            hub.publish("a", "officer_status", {"officer_id": i % 40, "n": i})
        hub.publish("a", "alert", {"id": "after"})
        assert hub.subscriber_count("a") == 1 and hub.dropped == 0
        got = [await asyncio.wait_for(sub.next(), 1) for _ in range(sub.pending())]
        assert [e["data"]["id"] for e in got if e["type"] == "alert"] == ["before", "after"]
        latest = {e["data"]["officer_id"]: e["data"]["n"] for e in got if e["type"] == "officer_status"}
        assert latest == {o: 4960 + o for o in range(40)}
        assert [e["id"] for e in got] == sorted(e["id"] for e in got)  # still in id order, so resume works

    async def test_a_status_burst_does_not_push_alerts_out_of_the_replay_buffer(self):
        hub = LiveHub()
        seen = hub.publish("a", "officer_status", {"officer_id": 1, "n": 0})["id"]
        hub.publish("a", "alert", {"id": "x"})
        for i in range(3000):
            hub.publish("a", "officer_status", {"officer_id": i % 7, "n": i})
        _, backlog = hub.subscribe("a", seen)
        assert [e["data"]["id"] for e in backlog if e["type"] == "alert"] == ["x"]
        assert len(backlog) == 1 + 7
        assert hub.complete_since("a", seen)


class TestFallingBehind:
    async def test_a_subscriber_that_falls_behind_is_told_why_not_left_waiting(self):
        hub = LiveHub(subscriber_queue=10)
        sub, _ = hub.subscribe("a")
        for i in range(11):
            hub.publish("a", "alert", {"id": str(i)})
        assert hub.subscriber_count("a") == 0 and hub.dropped == 1
        with pytest.raises(FellBehind, match="fell behind"):
            await asyncio.wait_for(sub.next(), 1)  # the old hub left this waiting forever

    async def test_it_resumes_from_its_last_event_id(self):
        hub = LiveHub(subscriber_queue=10, replay_buffer=50)
        sub, _ = hub.subscribe("a")
        first = hub.publish("a", "alert", {"id": "0"})
        assert (await sub.next())["id"] == first["id"]
        for i in range(1, 20):
            hub.publish("a", "alert", {"id": str(i)})
        with pytest.raises(FellBehind):
            await sub.next()
        again, backlog = hub.subscribe("a", first["id"])
        assert [e["data"]["id"] for e in backlog] == [str(i) for i in range(1, 20)]
        assert hub.complete_since("a", first["id"])
        hub.publish("a", "alert", {"id": "20"})
        assert (await asyncio.wait_for(again.next(), 1))["data"]["id"] == "20"

    def test_a_resume_from_before_the_replay_buffer_is_known_incomplete(self):
        hub = LiveHub(now=lambda: 1000.0, replay_buffer=5)
        first = hub.publish("a", "alert", {"id": "0"})["id"]
        for i in range(1, 10):
            hub.publish("a", "alert", {"id": str(i)})
        assert not hub.complete_since("a", first)
        assert hub.complete_since("a", first + 5)
        assert not LiveHub(now=lambda: 2000.0).complete_since("a", first)  # an id from before a restart


def test_a_client_that_saw_nothing_resumes_from_where_it_subscribed():
    hub = LiveHub(now=lambda: 1000.0)
    start = hub.last_id("a")
    assert hub.complete_since("a", start)
    hub.publish("a", "alert", {"n": 1})
    _, backlog = hub.subscribe("a", start)
    assert [e["data"]["n"] for e in backlog] == [1]
    assert hub.last_id("a") == backlog[-1]["id"]
