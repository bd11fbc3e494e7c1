"""The backend's own MQTT 5 subscriber against the real Mosquitto: a half-open link (the broker's
answers stop arriving, nothing closes) is found by the keepalive and ends the connection, so ingest
reconnects instead of stalling until TCP gives up."""
from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from backend.ingest.mqtt import UplinkError, UplinkSubscriber

pytestmark = pytest.mark.integration


class BlackholeProxy:
    """A TCP proxy on loopback in front of the broker; ``freeze()`` stops forwarding in both
    directions without closing anything: a half-open link as a dead NAT or radio leaves it."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self.frozen = asyncio.Event()
        self._tasks: set[asyncio.Task] = set()

    async def __aenter__(self) -> "BlackholeProxy":
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc) -> None:
        self.server.close()
        for task in self._tasks:
            task.cancel()

    async def _client(self, reader, writer) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(src, dst))
            self._tasks.add(task)

    async def _pipe(self, src, dst) -> None:
        with contextlib.suppress(OSError, ConnectionError):
            while data := await src.read(65536):
                if self.frozen.is_set():
                    await asyncio.Event().wait()  # swallow everything from now on; close nothing
                dst.write(data)
                await dst.drain()

    def freeze(self) -> None:
        self.frozen.set()


async def test_half_open_link_is_detected_by_the_keepalive(mqtt_broker, agency):
    async with BlackholeProxy(mqtt_broker) as proxy:
        async with UplinkSubscriber(f"mqtt://127.0.0.1:{proxy.port}", f"vigil-test-{agency}", persistent=False,
                                    keepalive_s=2) as uplink:
            await uplink.subscribe([f"vigil/{agency}/#"])
            proxy.freeze()
            frozen_at = time.monotonic()
            with pytest.raises(UplinkError, match="no answer from the broker"):
                async with asyncio.timeout(15):  # the old subscriber waited here for ever
                    async for _ in uplink.batches():
                        pass
            assert time.monotonic() - frozen_at < 5


async def test_a_live_link_is_kept_across_several_keepalives(mqtt_broker, agency):
    async with UplinkSubscriber(f"mqtt://{mqtt_broker[0]}:{mqtt_broker[1]}", f"vigil-test-{agency}", persistent=False,
                                keepalive_s=1) as uplink:
        await uplink.subscribe([f"vigil/{agency}/#"])
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(3.5):  # PINGRESPs keep it alive: no UplinkError
                async for _ in uplink.batches():
                    pass


# ---- conformance against the real Mosquitto (issue 15, item 8) --------------------------------

async def _publish_all(mqtt_broker, messages: list[tuple[str, bytes]]) -> None:
    import aiomqtt
    async with aiomqtt.Client(*mqtt_broker, protocol=aiomqtt.ProtocolVersion.V5) as client:
        for topic, payload in messages:
            await client.publish(topic, payload, qos=1)


async def _take(uplink: UplinkSubscriber, n: int, timeout: float = 10.0, ack: bool = True) -> list[tuple]:
    got: list[tuple] = []
    async with asyncio.timeout(timeout):
        async for batch in uplink.batches():
            got += batch
            if ack:
                uplink.ack(batch)
            if len(got) >= n:
                return got
    return got


async def test_a_persistent_session_gets_what_was_published_while_it_was_away(mqtt_broker, agency):
    url, ident, topic = f"mqtt://{mqtt_broker[0]}:{mqtt_broker[1]}", f"conf-resume-{agency}", f"vigil/{agency}/conf/resume"
    async with UplinkSubscriber(url, ident) as uplink:
        await uplink.subscribe([topic])
        await asyncio.sleep(0.2)  # the SUBACK
    await _publish_all(mqtt_broker, [(topic, b"away-%d" % i) for i in range(3)])
    async with UplinkSubscriber(url, ident) as uplink:  # no subscribe: the session kept it
        got = await _take(uplink, 3)
    assert [m[1] for m in got] == [b"away-0", b"away-1", b"away-2"]


async def test_a_message_not_acknowledged_is_handed_back_after_a_reconnect(mqtt_broker, agency):
    url, ident, topic = f"mqtt://{mqtt_broker[0]}:{mqtt_broker[1]}", f"conf-redeliver-{agency}", f"vigil/{agency}/conf/redeliver"
    async with UplinkSubscriber(url, ident) as uplink:
        await uplink.subscribe([topic])
        await asyncio.sleep(0.2)
        await _publish_all(mqtt_broker, [(topic, b"unacked-%d" % i) for i in range(2)])
        first = await _take(uplink, 2, ack=False)  # handled, never acknowledged: the process dies here
    async with UplinkSubscriber(url, ident) as uplink:
        again = await _take(uplink, 2)
    assert [m[1] for m in first] == [m[1] for m in again] == [b"unacked-0", b"unacked-1"]
    async with UplinkSubscriber(url, ident) as uplink:  # acknowledged now: not handed back a third time
        await _publish_all(mqtt_broker, [(topic, b"next")])
        assert [m[1] for m in await _take(uplink, 1)] == [b"next"]


async def test_qos1_messages_of_one_publisher_arrive_in_order(mqtt_broker, agency):
    url, topic = f"mqtt://{mqtt_broker[0]}:{mqtt_broker[1]}", f"vigil/{agency}/conf/order"
    async with UplinkSubscriber(url, f"conf-order-{agency}", persistent=False) as uplink:
        await uplink.subscribe([topic])
        await asyncio.sleep(0.2)
        await _publish_all(mqtt_broker, [(topic, i.to_bytes(4, "big")) for i in range(500)])
        got = await _take(uplink, 500)
    assert [int.from_bytes(m[1], "big") for m in got] == list(range(500))


async def test_an_oversize_packet_is_never_sent_to_us_and_the_link_goes_on(mqtt_broker, agency):
    """The subscriber announces a Maximum Packet Size (16 KiB): the broker drops a bigger message
    instead of making ingest buffer it (a frame is a few hundred bytes), and what follows arrives."""
    from backend.ingest.mqtt import UPLINK_MAXIMUM_PACKET

    url, topic = f"mqtt://{mqtt_broker[0]}:{mqtt_broker[1]}", f"vigil/{agency}/conf/oversize"
    async with UplinkSubscriber(url, f"conf-oversize-{agency}", persistent=False) as uplink:
        await uplink.subscribe([topic])
        await asyncio.sleep(0.2)
        await _publish_all(mqtt_broker, [(topic, b"x" * (UPLINK_MAXIMUM_PACKET * 4)), (topic, b"small")])
        got = await _take(uplink, 1)
    assert [m[1] for m in got] == [b"small"]
