"""The live hub's event ids: increasing, and a client resuming after a backend restart with an
id from the previous process gets what the new process has published since."""
from backend.incidents.hub import LiveHub


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
