"""MQTT connection settings shared by the backend's ingest and downlink, and ingest's lean uplink subscriber."""
from __future__ import annotations

import asyncio
import contextlib
import random
import time
from urllib.parse import urlsplit

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from backend.ingest import fastpath
from gateway.backoff import retry_delay

# The broker keeps our subscriptions and undelivered QoS 1 frames this long while we are away.
SESSION_EXPIRY_S = 3600
# Reconnect delays (gateway.backoff): capped exponential with full jitter, so many backends
# don't stampede a restarted broker. The events lane (SOS, falls) retries at least every 0.5 s:
# an SOS pressed during an outage must reach the supervisor within a second of the broker's
# return (measured by `vigil bench faults`, broker-kill); a refused connect to a broker that is
# down costs it nothing, and one backend's events lane is one client. Telemetry waits up to 2 s
# (it waited up to 15 s: `/health` said "no broker connection" and features lagged that long
# after the broker was back).
RECONNECT_BASE_S = 0.5
RECONNECT_CAP_S = 2.0
EVENTS_RECONNECT_CAP_S = 0.5


def reconnect_delay(attempt: int, rng: random.Random | None = None, cap_s: float = RECONNECT_CAP_S) -> float:
    """Seconds before reconnect attempt ``attempt`` (0 = the first retry), with the backend's tuning."""
    return retry_delay(attempt + 1, RECONNECT_BASE_S, cap_s, (rng or random).random())


def tls_context(ca_file: str | None = None):
    """TLS for mqtts://: the broker's certificate is verified (host name included) against
    ``ca_file`` when given (a private CA), else against the system's trusted CAs."""
    import ssl
    return ssl.create_default_context(cafile=ca_file)


def client_for(url: str, identifier: str, persistent: bool = True, *, ca_file: str | None = None, **kwargs) -> aiomqtt.Client:
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ValueError(f"MQTT URL must start with mqtt:// or mqtts://, got {url!r}")
    props = None
    if persistent:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = SESSION_EXPIRY_S
    tls = None
    if parts.scheme == "mqtts":
        tls = tls_context(ca_file)
    return aiomqtt.Client(
        parts.hostname or "127.0.0.1", parts.port or (8883 if tls else 1883),
        username=parts.username, password=parts.password, identifier=identifier,
        protocol=aiomqtt.ProtocolVersion.V5, clean_start=not persistent, properties=props,
        tls_context=tls, **kwargs,
    )


# ---- the uplink subscriber ---------------------------------------------------------------------------
#
# Ingest receives every frame of every wearable (2.5 per second each), so the per-message cost of
# the MQTT client is the ceiling of a backend process. paho (under aiomqtt) builds several Python
# objects per QoS 1 message (an MQTT 5 property table, a message, a condition for the PUBACK) and
# sends each PUBACK alone; the profile of `vigil bench ingest` put it at half of the backend's
# CPU. UplinkSubscriber speaks only what ingest needs of MQTT 5 -- a persistent session, QoS 1
# subscriptions, PUBLISH in, PUBACK out, keepalive -- and hands frames over in batches, in the
# order the broker delivered them (the order of each device's frames is kept); PUBACKs for a
# batch are written together after the batch was handled.

# Ask the broker for pings this often; we send PINGREQ at half of it.
UPLINK_KEEPALIVE_S = 30
# How many unacknowledged QoS 1 messages the broker may send us (MQTT 5 Receive Maximum).
UPLINK_RECEIVE_MAXIMUM = 65535
# The largest packet the broker may send us (MQTT 5 Maximum Packet Size): a frame is a few hundred
# bytes; anything bigger is not one, and the broker drops it instead of making us buffer it.
UPLINK_MAXIMUM_PACKET = 16 * 1024
# One read: about 280 frames; the loop gets a turn between reads (SOS pushes, hops).
_READ_CHUNK = 1 << 16
# PUBACKs of small batches wait this long to share one write; this many go out at once
# (the broker sends at most its max_inflight_messages before it needs them).
ACK_DELAY_S = 0.002
ACK_BATCH = 32


class UplinkError(aiomqtt.MqttError):
    """The uplink connection failed or was refused (an ``aiomqtt.MqttError``: one reconnect path)."""


def encode_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        n, byte = divmod(n, 128)
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def encode_utf8(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return len(b).to_bytes(2, "big") + b


def _read_varint(buf: bytes | memoryview, pos: int) -> tuple[int, int] | None:
    """(value, position after it), or None when the buffer ends inside it."""
    value, shift = 0, 0
    while pos < len(buf):
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7
        if shift > 21:
            raise UplinkError("malformed remaining length from the broker")
    return None


# MQTT 5 property identifiers and the size of their values (None: a string or binary, 2-byte length).
_PROPERTY_SIZES = {0x01: 1, 0x02: 4, 0x03: None, 0x08: None, 0x09: None, 0x0B: -1, 0x23: 2}
_USER_PROPERTY = 0x26


def _user_properties(buf: bytes, pos: int, end: int) -> dict[str, str]:
    props: dict[str, str] = {}
    while pos < end:
        ident = buf[pos]
        pos += 1
        if ident == _USER_PROPERTY:
            n = int.from_bytes(buf[pos:pos + 2], "big")
            key = buf[pos + 2:pos + 2 + n].decode()
            pos += 2 + n
            n = int.from_bytes(buf[pos:pos + 2], "big")
            props[key] = buf[pos + 2:pos + 2 + n].decode()
            pos += 2 + n
            continue
        size = _PROPERTY_SIZES.get(ident, 0)
        if size is None:
            pos += 2 + int.from_bytes(buf[pos:pos + 2], "big")
        elif size == -1:
            got = _read_varint(buf, pos)
            pos = got[1] if got else end
        elif size:
            pos += size
        else:
            break  # a property a PUBLISH to us does not carry: ignore the rest
    return props


class UplinkSubscriber:
    """A persistent MQTT 5 session that receives QoS 1 messages in batches.

        async with UplinkSubscriber(url, "vigil-backend") as uplink:
            await uplink.subscribe(["vigil/+/gw/+/up/+/+"])
            async for batch in uplink.batches():
                for topic, payload, props in batch:
                    ...
                await uplink.ack(batch)     # after the batch was handled
    """

    def __init__(self, url: str, identifier: str, *, persistent: bool = True, keepalive_s: int = UPLINK_KEEPALIVE_S,
                 ca_file: str | None = None, compiled: bool = True):
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts"):
            raise ValueError(f"MQTT URL must start with mqtt:// or mqtts://, got {url!r}")
        self._host = parts.hostname or "127.0.0.1"
        self._tls = parts.scheme == "mqtts"
        self._ca_file = ca_file  # mqtts:// with a private CA (settings.mqtt_ca_file)
        self._port = parts.port or (8883 if self._tls else 1883)
        self._username, self._password = parts.username, parts.password
        self._identifier = identifier
        self._persistent = persistent
        self._keepalive_s = keepalive_s
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._pinger: asyncio.Task | None = None
        self._last_heard = time.monotonic()  # anything from the broker proves the link is alive
        self._silent: str | None = None  # why the pinger gave up on the link
        self._buf = b""
        self._packet_id = 0
        self._acks = bytearray()
        self._ack_timer: asyncio.TimerHandle | None = None
        # backend/ingest/_fastpath.pyx's PUBLISH splitter when built (the same messages: tests/backend/test_fastpath.py)
        self._take_publishes = fastpath.module().take_publishes if compiled and fastpath.AVAILABLE else None

    async def __aenter__(self) -> "UplinkSubscriber":
        ssl_context = None
        if self._tls:
            ssl_context = tls_context(self._ca_file)
        try:
            self._reader, self._writer = await asyncio.wait_for(
                asyncio.open_connection(self._host, self._port, ssl=ssl_context, limit=_READ_CHUNK), 10)
            self._writer.write(self._connect_packet())
            await self._writer.drain()
            first, body = await asyncio.wait_for(self._read_packet(), 10)
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError) as exc:
            await self._close()
            raise UplinkError(f"cannot connect to {self._host}:{self._port}: {exc!r}") from exc
        if first >> 4 != 2 or len(body) < 2 or body[1] != 0:
            await self._close()
            raise UplinkError(f"the broker refused the connection (CONNACK {bytes(body[:2]).hex()})")
        self._last_heard = time.monotonic()
        self._pinger = asyncio.create_task(self._ping(), name="uplink-ping")
        return self

    async def __aexit__(self, *exc) -> None:
        if self._writer is not None and not self._writer.is_closing():
            with contextlib.suppress(OSError):
                self._flush_acks()  # what was handled is acknowledged
                self._writer.write(b"\xe0\x00")  # DISCONNECT, normal: the session stays
        await self._close()

    async def _close(self) -> None:
        if self._ack_timer is not None:
            self._ack_timer.cancel()
            self._ack_timer = None
        if self._pinger is not None:
            self._pinger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pinger
            self._pinger = None
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError, ConnectionError):
                await self._writer.wait_closed()
            self._writer = None

    def _connect_packet(self) -> bytes:
        flags = 0x00 if self._persistent else 0x02
        props = (b"\x11" + (SESSION_EXPIRY_S if self._persistent else 0).to_bytes(4, "big")
                 + b"\x21" + UPLINK_RECEIVE_MAXIMUM.to_bytes(2, "big")
                 + b"\x27" + UPLINK_MAXIMUM_PACKET.to_bytes(4, "big"))
        payload = encode_utf8(self._identifier)
        if self._username is not None:
            flags |= 0x80
            payload += encode_utf8(self._username)
            if self._password is not None:
                flags |= 0x40
                payload += encode_utf8(self._password)
        body = (encode_utf8("MQTT") + bytes([5, flags]) + self._keepalive_s.to_bytes(2, "big")
                + encode_varint(len(props)) + props + payload)
        return b"\x10" + encode_varint(len(body)) + body

    async def _read_packet(self) -> tuple[int, bytes]:
        """One whole packet (first byte, body), for the handshake."""
        head = await self._reader.readexactly(2)
        first, length, shift, b = head[0], head[1] & 0x7F, 7, head[1]
        while b & 0x80:
            b = (await self._reader.readexactly(1))[0]
            length |= (b & 0x7F) << shift
            shift += 7
        return first, await self._reader.readexactly(length)

    async def _ping(self) -> None:
        """PINGREQ every half keepalive; a broker silent for a whole keepalive (no PINGRESP, no
        message) is a half-open link: close it, so batches() raises and ingest reconnects
        instead of waiting for TCP to give up (minutes to hours)."""
        while True:
            await asyncio.sleep(self._keepalive_s / 2)
            silent = time.monotonic() - self._last_heard
            if silent > self._keepalive_s:
                self._silent = f"no answer from the broker for {silent:.1f} s (keepalive {self._keepalive_s} s)"
                self._writer.transport.abort()
                return
            self._writer.write(b"\xc0\x00")

    async def subscribe(self, filters: list[str], qos: int = 1) -> None:
        self._packet_id = self._packet_id % 65535 + 1
        body = self._packet_id.to_bytes(2, "big") + b"\x00" + b"".join(encode_utf8(f) + bytes([qos]) for f in filters)
        self._writer.write(b"\x82" + encode_varint(len(body)) + body)
        await self._writer.drain()
        # the SUBACK arrives on the stream like everything else; batches() checks it

    async def unsubscribe(self, filters: list[str]) -> None:
        self._packet_id = self._packet_id % 65535 + 1
        body = self._packet_id.to_bytes(2, "big") + b"\x00" + b"".join(encode_utf8(f) for f in filters)
        self._writer.write(b"\xa2" + encode_varint(len(body)) + body)
        await self._writer.drain()  # the UNSUBACK (also for a filter we never had) needs no answer

    async def batches(self):
        """Yield lists of (topic, payload, user properties) as they arrive; raise UplinkError
        when the connection ends."""
        while True:
            try:
                chunk = await self._reader.read(_READ_CHUNK)
            except (OSError, asyncio.IncompleteReadError) as exc:
                raise UplinkError(self._silent or f"uplink connection lost: {exc!r}") from exc
            if not chunk:
                raise UplinkError(self._silent or "the broker closed the uplink connection")
            self._last_heard = time.monotonic()
            batch = self.feed(chunk)
            if batch:
                yield batch

    def feed(self, chunk: bytes) -> list[tuple[str, bytes, dict[str, str] | None, int]]:
        """The messages (topic, payload, user properties, packet id) that these bytes from the
        broker complete; a packet cut at the end waits for the next chunk. Raises UplinkError
        for a refused subscription or the broker's DISCONNECT."""
        buf = self._buf + chunk if self._buf else chunk
        out: list = []
        pos, n = 0, len(buf)
        while pos + 2 <= n:
            if self._take_publishes is not None and type(buf) is bytes:
                # the compiled path takes the run of plain PUBLISH packets; anything else is read below
                pos = self._take_publishes(buf, pos, out)
                if pos + 2 > n:
                    break
            first = buf[pos]
            got = _read_varint(buf, pos + 1)
            if got is None:
                break
            length, start = got
            end = start + length
            if end > n:
                break
            kind = first >> 4
            if kind == 3:  # PUBLISH
                tlen = (buf[start] << 8) | buf[start + 1]
                p = start + 2 + tlen
                topic = buf[start + 2:p].decode()
                packet_id = 0
                if first & 0x06:
                    packet_id = (buf[p] << 8) | buf[p + 1]
                    p += 2
                plen, p2 = _read_varint(buf, p)
                props = _user_properties(buf, p2, p2 + plen) if plen else None
                out.append((topic, buf[p2 + plen:end], props, packet_id))
            elif kind == 9:  # SUBACK: every reason code must grant QoS 1 (or 0)
                plen, p2 = _read_varint(buf, start + 2)
                codes = buf[p2 + plen:end]
                if any(c >= 0x80 for c in codes):
                    raise UplinkError(f"the broker refused a subscription (SUBACK {bytes(codes).hex()})")
            elif kind == 14:  # DISCONNECT from the broker
                reason = buf[start] if length else 0
                raise UplinkError(f"the broker disconnected us (reason 0x{reason:02x})")
            pos = end  # PINGRESP and anything else: nothing to do
        self._buf = buf[pos:]
        return out

    def ack(self, batch: list[tuple[str, bytes, dict[str, str] | None, int]]) -> None:
        """Acknowledge the QoS 1 messages of a handled batch. Small batches' PUBACKs are held
        for up to ACK_DELAY_S and written together (one send per batch was most of the cost
        at moderate load); ACK_BATCH of them go out at once."""
        self._acks += b"".join(b"\x40\x02" + m[3].to_bytes(2, "big") for m in batch if m[3])
        if len(self._acks) >= 4 * ACK_BATCH:
            self._flush_acks()
        elif self._acks and self._ack_timer is None:
            self._ack_timer = asyncio.get_running_loop().call_later(ACK_DELAY_S, self._flush_acks)

    def _flush_acks(self) -> None:
        if self._ack_timer is not None:
            self._ack_timer.cancel()
            self._ack_timer = None
        if self._acks and self._writer is not None and not self._writer.is_closing():
            self._writer.write(bytes(self._acks))
        self._acks.clear()
