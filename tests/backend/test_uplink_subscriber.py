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
