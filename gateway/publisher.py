"""The MQTT side of the gateway (aiomqtt, MQTT 5, QoS 1, persistent session).

One connection at a time, reconnected with capped full-jitter backoff. While connected, three
named tasks run in a TaskGroup: forwarding frames from the durable queue (events first), taking
downlink commands for this gateway's devices, and publishing link quality. The gateway's state is
retained on its state topic; the broker publishes the last will "offline" if the gateway vanishes.

Location (a fixed position from the settings) rides on event frames only, as MQTT 5 user
properties ``lat`` and ``lon``; the frame bytes are never changed.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import ssl
import time
from collections.abc import Callable

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from firmware import frame
from gateway import topics
from gateway.backoff import retry_delay
from gateway.config import GatewaySettings
from gateway.exceptions import DownlinkError, GatewayIdInUse
from gateway.link import DeviceLink, DownlinkCommand
from gateway.metrics import GatewayMetrics
from gateway.presence import PROBE_TIMEOUT_S, Presence
from gateway.store import FrameQueue, QueuedFrame

log = logging.getLogger("vigil.gateway.mqtt")

# Telemetry/status frames published per round trip to the queue; the broker acknowledges them
# in a pipeline. 500 keeps one gateway above 6000 frames/s on a loopback broker; larger batches
# only delay the acknowledgement of the first frames.
PUBLISH_BATCH = 500
# Events have their own lane, so an SOS never waits behind a batch of telemetry.
EVENT_BATCH = 50
# Broker reconnect backoff (gateway.backoff): a gateway carries SOS frames, so it is back within
# half a second of the broker's return (an SOS pressed during an outage reaches the supervisor
# within a second of it); full jitter spreads a fleet of gateways over that half second.
BROKER_RETRY_BASE_S = 0.25
BROKER_RETRY_CAP_S = 0.5
# The broker keeps the session (downlink subscription and its queued commands) this long.
SESSION_EXPIRY_S = 24 * 3600
# A reconnect first asks this long whether another gateway took the id (answers take ms).
RECONNECT_PROBE_S = 0.1
# How long one publish may wait for its PUBACK before the connection is considered broken.
PUBLISH_TIMEOUT_S = 10.0


class MqttBridge:
    def __init__(self, settings: GatewaySettings, store: FrameQueue, metrics: GatewayMetrics,
                 links: Callable[[], dict[int, DeviceLink]], *, rng: random.Random | None = None):
        self.settings = settings
        self._store = store
        self._metrics = metrics
        self._links = links
        self._lanes = {"events": asyncio.Event(), "bulk": asyncio.Event()}
        self.wake(events=True)  # whatever a previous run left in the queue
        self._rng = rng or random.Random()
        self.connected = asyncio.Event()
        self._state_topic = topics.gateway_state(settings.agency, settings.gateway_id)
        self.presence = Presence(settings.agency, settings.gateway_id)

    async def check_presence(self, timeout: float = PROBE_TIMEOUT_S) -> None:
        """Raise GatewayIdInUse when another gateway holds this id (gateway/presence.py); a broker
        that cannot be reached cannot say, and is asked again on every reconnect."""
        s = self.settings
        try:
            await self.presence.check(s.mqtt_host, s.mqtt_port, username=s.mqtt_username,
                                      password=s.mqtt_password.get_secret_value() if s.mqtt_password else None,
                                      tls_context=ssl.create_default_context(cafile=s.mqtt_ca_file) if s.mqtt_tls else None,
                                      timeout=timeout)
        except aiomqtt.MqttError as exc:
            log.info("cannot ask the broker whether gateway id %s is free (%s); asking again on connect", s.gateway_id, exc)

    def wake(self, events: bool) -> None:
        """New frames are in the queue (``events``: some of them are events)."""
        self._lanes["bulk"].set()
        if events:
            self._lanes["events"].set()

    def _state_payload(self, state: str) -> bytes:
        payload = {"state": state, "agency": self.settings.agency, "gateway": self.settings.gateway_id,
                   "at": round(time.time(), 3)}
        if self.settings.location is not None:  # where its officers are, for the backend's map and nearby alerts
            payload["lat"], payload["lon"] = self.settings.location
        if state == "online":  # the frames waiting in its queue, for the fleet page (the last will cannot know)
            payload["queue_depth"] = self._store.depth
        return json.dumps(payload).encode()

    def _client(self) -> aiomqtt.Client:
        s = self.settings
        connect_props = Properties(PacketTypes.CONNECT)
        connect_props.SessionExpiryInterval = SESSION_EXPIRY_S
        client = aiomqtt.Client(
            s.mqtt_host, s.mqtt_port,
            username=s.mqtt_username,
            password=s.mqtt_password.get_secret_value() if s.mqtt_password else None,
            identifier=f"vigil-gw-{s.agency}-{s.gateway_id}",
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=False,  # persistent session: downlink commands wait for us across reconnects
            properties=connect_props,
            keepalive=s.mqtt_keepalive_s,
            will=aiomqtt.Will(self._state_topic, self._state_payload("offline"), qos=1, retain=True),
            max_inflight_messages=PUBLISH_BATCH,
            timeout=PUBLISH_TIMEOUT_S,
            # mqtts://: the broker's certificate and host name are verified (a private CA via mqtt_ca_file)
            tls_context=ssl.create_default_context(cafile=s.mqtt_ca_file) if s.mqtt_tls else None,
        )
        client.pending_calls_threshold = 4 * PUBLISH_BATCH  # a pipelined batch is not a warning
        return client

    async def run(self, stop: asyncio.Event) -> None:
        attempt = 0
        clash_logged = False
        while not stop.is_set():
            try:
                if attempt:  # the first connect follows Gateway.run's check; a reconnect asks briefly:
                    # someone may have taken the id while the broker was away (do not knock them off)
                    await self.check_presence(RECONNECT_PROBE_S)
                clash_logged = False
                async with self._client() as client:
                    attempt = 0
                    self._metrics.broker_connected.set(1)
                    self.connected.set()
                    log.info("connected to MQTT %s", self.settings.mqtt_url)
                    await client.publish(self._state_topic, self._state_payload("online"), qos=1, retain=True)
                    await client.subscribe(topics.downlink_filter(self.settings.agency, self.settings.gateway_id), qos=1)
                    await client.subscribe(self._state_topic, qos=1)  # probes: is this id in use?
                    await self._connected(client, stop)
                    with contextlib.suppress(aiomqtt.MqttError):
                        await client.publish(self._state_topic, self._state_payload("offline"), qos=1,
                                             retain=True, timeout=2)
            except* GatewayIdInUse as group:  # someone took the id while the broker was away: do not fight
                if not clash_logged:
                    log.error("%s; not connecting while it is online", group.exceptions[0])
                    clash_logged = True
                attempt += 1
            except* (aiomqtt.MqttError, TimeoutError) as group:
                if self.connected.is_set() or attempt == 0:
                    log.warning("MQTT broker %s unreachable (%s); frames wait in %s",
                                self.settings.mqtt_url, group.exceptions[0], self._store.path)
                attempt += 1
            finally:
                self._metrics.broker_connected.set(0)
                self.connected.clear()
            if stop.is_set():
                break
            delay = retry_delay(attempt, BROKER_RETRY_BASE_S, BROKER_RETRY_CAP_S, self._rng.random())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)

    async def _connected(self, client: aiomqtt.Client, stop: asyncio.Event) -> None:
        """Run the connection's loops until stop (return) or a broker error (raises an
        ExceptionGroup holding the MqttError)."""
        async with asyncio.TaskGroup() as tg:
            loops = [tg.create_task(self._forward(client, "events", EVENT_BATCH), name="mqtt-forward-events"),
                     tg.create_task(self._forward(client, "bulk", PUBLISH_BATCH), name="mqtt-forward-bulk"),
                     tg.create_task(self._downlink(client), name="mqtt-downlink"),
                     tg.create_task(self._link_quality(client), name="mqtt-link-quality")]
            await stop.wait()  # a failing loop cancels this wait and the TaskGroup raises its error
            for task in loops:
                task.cancel()

    # ---- uplink -------------------------------------------------------------------------------

    async def _forward(self, client: aiomqtt.Client, lane: str, batch_size: int) -> None:
        """Publish one lane of the queue in order; a frame leaves the queue on its PUBACK."""
        waiting = self._lanes[lane]
        while True:
            waiting.clear()
            batch = self._store.peek(batch_size, lane)
            if not batch:
                await waiting.wait()
                continue
            results = await asyncio.gather(*(self._publish(client, f) for f in batch), return_exceptions=True)
            acked = [f for f, r in zip(batch, results) if r is None]
            self._store.ack([f.id for f in acked])
            for f in acked:
                self._metrics.frames_out.labels(f.kind).inc()
            self._metrics.queue_depth.set(self._store.depth)
            failures = [r for r in results if r is not None]
            if failures:
                err = failures[0]
                if isinstance(err, aiomqtt.MqttError):
                    raise err
                raise aiomqtt.MqttError(f"publish failed: {err!r}") from err

    async def _publish(self, client: aiomqtt.Client, f: QueuedFrame) -> None:
        topic = topics.uplink(self.settings.agency, self.settings.gateway_id, f.device_id, f.kind)
        props = None
        if f.kind == "event" and f.lat is not None and f.lon is not None:
            props = Properties(PacketTypes.PUBLISH)
            props.UserProperty = [("lat", f"{f.lat:.6f}"), ("lon", f"{f.lon:.6f}")]
        await client.publish(topic, f.payload, qos=1, properties=props)

    # ---- downlink ------------------------------------------------------------------------------

    async def _downlink(self, client: aiomqtt.Client) -> None:
        async with asyncio.TaskGroup() as tg:
            async for message in client.messages:
                tg.create_task(self._command(client, message))

    async def _command(self, client: aiomqtt.Client, message: aiomqtt.Message) -> None:
        if str(message.topic) == self._state_topic:
            reply = self.presence.answer_for(bytes(message.payload))
            if reply is not None:
                log.warning("another gateway asked whether id %s is in use: answered yes", self.settings.gateway_id)
                with contextlib.suppress(aiomqtt.MqttError):
                    await client.publish(self._state_topic, reply, qos=1)
            return
        try:
            parsed = topics.parse(str(message.topic))
        except topics.TopicError:
            return
        if parsed.direction != "down" or parsed.device_id is None:
            return
        device_id = parsed.device_id
        payload = bytes(message.payload) if isinstance(message.payload, (bytes, bytearray)) else b""
        seq = None
        with contextlib.suppress(frame.FrameError):
            header = frame.parse_header(payload)
            seq = header.seq
        link = self._links().get(device_id)
        if link is None:
            await self._result(client, device_id, seq, False, "not_provisioned")
            return
        command = DownlinkCommand(device_id, payload, seq, time.time())
        link.submit(command)
        try:
            await asyncio.wait_for(asyncio.shield(command.done), self.settings.downlink_ttl_s)
        except TimeoutError:
            if not command.done.done():
                command.done.cancel()
            await self._result(client, device_id, seq, False, "device_unreachable")
        except DownlinkError as exc:
            await self._result(client, device_id, seq, False, exc.reason)
        else:
            await self._result(client, device_id, seq, True, None)

    async def _result(self, client: aiomqtt.Client, device_id: int, seq: int | None, ok: bool,
                      error: str | None) -> None:
        self._metrics.downlink.labels("ok" if ok else "failed").inc()
        if not ok:
            log.warning("VG-%08X: downlink command seq %s failed: %s", device_id, seq, error)
        body = {"device_id": device_id, "command_seq": seq, "ok": ok, "error": error,
                "gateway": self.settings.gateway_id, "at": round(time.time(), 3)}
        with contextlib.suppress(aiomqtt.MqttError):
            await client.publish(topics.downlink_result(self.settings.agency, self.settings.gateway_id, device_id),
                                 json.dumps(body).encode(), qos=1)

    # ---- link quality ----------------------------------------------------------------------------

    async def _link_quality(self, client: aiomqtt.Client) -> None:
        last: dict[int, dict] = {}
        said_depth = self._store.depth  # the state published on connect said this
        while True:
            if self._store.depth != said_depth:  # the queue grew or drained: the state says so (retained)
                said_depth = self._store.depth
                await client.publish(self._state_topic, self._state_payload("online"), qos=1, retain=True)
            for device_id, link in list(self._links().items()):
                body = {"device_id": device_id, "connected": link.connected, "rssi": link.rssi,
                        "frames": link.frames, "malformed": link.malformed, "seq_gaps": link.gaps,
                        "reconnects": link.reconnects, "last_reconnect_s": link.last_reconnect_s}
                if last.get(device_id) == body:
                    continue
                last[device_id] = body
                await client.publish(topics.link_quality(self.settings.agency, self.settings.gateway_id, device_id),
                                     json.dumps({**body, "at": round(time.time(), 3)}).encode(), qos=0, retain=True)
            await asyncio.sleep(self.settings.link_quality_interval_s)

