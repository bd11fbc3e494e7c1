"""Load for ``vigil bench ingest``: wearables' frames, pre-encoded, paced onto MQTT.

Each generator process owns a slice of the fleet and one MQTT connection (as a gateway does).
Before a step it seals every frame of the step with the firmware's encoder (``firmware.frame``;
``time_ms`` = the frame's scheduled publish wall time, so the backend and the bench share the
clock) and wraps it in a complete MQTT PUBLISH packet (QoS 1). During the step it only joins
the packets that are due and writes them to the socket, so the generator costs little CPU
next to the broker and the backend it measures. PUBACKs are counted, which gives the exact
number of frames the broker accepted.

A counting subscriber (no backend) gives the broker's own ceiling on this machine.

The MQTT here is the minimum of 3.1.1 the bench needs (CONNECT, PUBLISH/PUBACK QoS 1,
SUBSCRIBE), written out so a generator publishes at socket speed; the backend under test uses
its real client (aiomqtt).
"""
from __future__ import annotations

import os
import resource
import socket
import struct
import threading
import time
from dataclasses import dataclass

import numpy as np

from firmware import frame as F
from backend.ingest.mqtt import encode_utf8, encode_varint
from gateway import topics
from gateway.sim.signals import SensorModel, to_frame_samples

RATE_HZ = 50
SAMPLES_PER_FRAME = 20
FRAME_PERIOD_S = SAMPLES_PER_FRAME / RATE_HZ          # 0.4 s: 2.5 frames/s per device
# Signal loops shared by the fleet: enough variety that the models see different officers.
SIGNAL_LOOPS = 24
LOOP_FRAMES = 50                                      # 20 s of signal per loop
LOOP_ACTIVITIES = ("standing", "walking", "sitting_car", "walking", "running", "standing")
# The pacing tick: due packets are written together every TICK_S.
TICK_S = 0.005
# How long a generator waits for the broker's last PUBACKs after its last publish.
ACK_WAIT_S = 20.0
# The PUBACK counter reads this often, not at every PUBACK the broker sends (thousands a second,
# each waking the thread and taking the GIL from the pacing thread).
ACK_READ_PAUSE_S = 0.01


# ---- MQTT 3.1.1 packets ------------------------------------------------------------------------

def connect_packet(client_id: str) -> bytes:
    body = encode_utf8("MQTT") + bytes([4, 0x02]) + struct.pack("!H", 0) + encode_utf8(client_id)  # clean session, no keepalive
    return b"\x10" + encode_varint(len(body)) + body


def publish_packet(topic: str, payload: bytes, packet_id: int) -> bytes:
    body = encode_utf8(topic) + struct.pack("!H", packet_id) + payload
    return b"\x32" + encode_varint(len(body)) + body


def subscribe_packet(topic_filter: str, packet_id: int = 1) -> bytes:
    body = struct.pack("!H", packet_id) + encode_utf8(topic_filter) + b"\x01"
    return b"\x82" + encode_varint(len(body)) + body


def open_connection(host: str, port: int, client_id: str) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    sock.sendall(connect_packet(client_id))
    connack = _recv_exact(sock, 4)
    if connack[0] != 0x20 or connack[3] != 0:
        raise ConnectionError(f"broker refused {client_id}: {connack.hex()}")
    sock.settimeout(None)
    return sock


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        buf += chunk
    return buf


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


# ---- the fleet's signals ---------------------------------------------------------------------------

def signal_payloads(seed: int = 7) -> list[list[bytes]]:
    """SIGNAL_LOOPS loops of LOOP_FRAMES telemetry payloads (realistic signals, one activity per loop)."""
    loops = []
    for k in range(SIGNAL_LOOPS):
        model = SensorModel(np.random.default_rng(seed * 1000 + k), sampling_rate=RATE_HZ, resting_hr=60 + 3 * k % 25)
        activity = LOOP_ACTIVITIES[k % len(LOOP_ACTIVITIES)]
        frames = []
        for _ in range(LOOP_FRAMES):
            ppg, accel = model.block(SAMPLES_PER_FRAME, activity)
            p, a = to_frame_samples(ppg, accel)
            frames.append(F.encode_telemetry(RATE_HZ, p, a))
        loops.append(frames)
    return loops


@dataclass(frozen=True, slots=True)
class Wearable:
    device_id: int
    agency: str
    key: bytes


@dataclass(frozen=True, slots=True)
class StepPlan:
    """One ramp step for one generator: which of its wearables publish, from when, how long."""

    step: int
    devices: int               # the first ``devices`` wearables of this generator
    t0: float                  # wall time of the first frame
    duration_s: float
    sos: tuple[tuple[int, float], ...]   # (device_id, wall time) of SOS presses
    seq_base: int              # per-device seq of the step's first frame (steps never reuse one)


class Generator:
    """The state of one generator process (runs in the child)."""

    def __init__(self, index: int, host: str, port: int, wearables: list[Wearable]):
        self.index = index
        self.gateway = f"bench-g{index}"
        self.host, self.port = host, port
        self.wearables = wearables
        self.keys = [F.DeviceKeys(w.key) for w in wearables]
        self.loops = signal_payloads()
        self.packet_id = 0
        self.sock: socket.socket | None = None
        self.acked = 0
        self._reader: threading.Thread | None = None

    def _next_id(self) -> int:
        self.packet_id = self.packet_id % 65535 + 1
        return self.packet_id

    def connect(self, suffix: str) -> None:
        self.close()
        self.sock = open_connection(self.host, self.port, f"vigil-bench-{os.getpid()}-{suffix}")
        self.acked = 0
        self._reader = threading.Thread(target=self._count_acks, args=(self.sock,), daemon=True)
        self._reader.start()

    def _count_acks(self, sock: socket.socket) -> None:
        # only PUBACKs (4 bytes each) come back: no keepalive, no subscriptions
        received = 0
        try:
            while True:
                chunk = sock.recv(1 << 16)
                if not chunk:
                    return
                received += len(chunk)
                self.acked = received // 4
                time.sleep(ACK_READ_PAUSE_S)  # let PUBACKs gather in the socket buffer
        except OSError:
            return

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.sock.close()
            self.sock = None
        if self._reader is not None:
            self._reader.join(2)
            self._reader = None

    # -- a paced step --

    def encode_step(self, plan: StepPlan) -> tuple[np.ndarray, list[bytes], dict[int, tuple[int, int]]]:
        """All packets of the step, sorted by due time; and where the SOS frames are."""
        n_frames = int(plan.duration_s / FRAME_PERIOD_S)
        sos_by_device: dict[int, list[float]] = {}
        for device_id, at in plan.sos:
            sos_by_device.setdefault(device_id, []).append(at)
        due: list[float] = []
        packets: list[bytes] = []
        sos_index: dict[int, tuple[int, int]] = {}     # packet index -> (device_id, seq)
        for i, (w, keys) in enumerate(zip(self.wearables[:plan.devices], self.keys)):
            loop = self.loops[w.device_id % SIGNAL_LOOPS]
            phase = (w.device_id * 0.6180339887 % 1.0) * FRAME_PERIOD_S   # spread devices over the period
            shift = w.device_id * 7
            tele = topics.uplink(w.agency, self.gateway, w.device_id, "telemetry")
            # (due time, frame number or -1 for an SOS); seq follows time, as on the device
            timeline = [(plan.t0 + phase + k * FRAME_PERIOD_S, k) for k in range(n_frames)]
            timeline += [(at, -1) for at in sos_by_device.get(w.device_id, ())]
            timeline.sort()
            for seq_offset, (at, k) in enumerate(timeline):
                seq = plan.seq_base + seq_offset
                time_ms = int(at * 1000)
                if k >= 0:
                    body = F.seal(keys, F.TYPE_TELEMETRY, w.device_id, seq, time_ms, loop[(k + shift) % LOOP_FRAMES])
                    topic = tele
                else:
                    body = F.seal(keys, F.TYPE_EVENT, w.device_id, seq, time_ms, F.encode_event(F.EVENT_SOS))
                    topic = topics.uplink(w.agency, self.gateway, w.device_id, "event")
                    sos_index[len(packets)] = (w.device_id, seq)
                due.append(at)
                packets.append(publish_packet(topic, body, self._next_id()))
        order = np.argsort(np.asarray(due), kind="stable")
        sorted_packets = [packets[j] for j in order]
        position = {int(p): i for i, p in enumerate(order)}
        return np.asarray(due)[order], sorted_packets, {position[j]: v for j, v in sos_index.items()}

    def run_step(self, plan: StepPlan, due: np.ndarray, packets: list[bytes], sos_index: dict[int, tuple[int, int]]) -> dict:
        self.connect(f"s{plan.step}")
        sent = 0
        lateness: list[float] = []
        sos_sent: list[tuple[int, int, float]] = []
        sos_positions = sorted(sos_index)
        next_sos = 0
        cpu0 = cpu_seconds()
        while sent < len(packets):
            now = time.time()
            upto = int(np.searchsorted(due, now, side="right"))
            if upto > sent:
                lateness.append(now - due[sent])
                while next_sos < len(sos_positions) and sos_positions[next_sos] < upto:
                    device_id, seq = sos_index[sos_positions[next_sos]]
                    sos_sent.append((device_id, seq, now))
                    next_sos += 1
                self.sock.sendall(b"".join(packets[sent:upto]))
                sent = upto
            else:
                time.sleep(min(TICK_S, max(0.0, due[sent] - now)))
        deadline = time.monotonic() + ACK_WAIT_S
        while self.acked < sent and time.monotonic() < deadline:
            time.sleep(0.01)
        cpu = cpu_seconds() - cpu0
        acked = self.acked
        self.close()
        late = np.asarray(lateness) if lateness else np.zeros(1)
        return {"published": sent, "acked": acked, "sos": sos_sent, "cpu_s": cpu,
                "late_p99_ms": float(np.percentile(late, 99) * 1000), "late_max_ms": float(late.max() * 1000)}

    # -- the broker ceiling: as fast as the socket takes it --

    def flood(self, agency: str, duration_s: float, t0: float) -> dict:
        w = self.wearables[0]
        body = F.seal(self.keys[0], F.TYPE_TELEMETRY, w.device_id, 1, int(t0 * 1000), self.loops[0][0])
        batch = b"".join(publish_packet(topics.uplink(agency, self.gateway, 100 + k % 1000, "telemetry"), body, self._next_id())
                         for k in range(200))
        self.connect("flood")
        while time.time() < t0:
            time.sleep(0.001)
        sent = 0
        end = t0 + duration_s
        while time.time() < end:
            self.sock.sendall(batch)
            sent += 200
        deadline = time.monotonic() + ACK_WAIT_S
        while self.acked < sent and time.monotonic() < deadline:
            time.sleep(0.01)
        acked = self.acked
        self.close()
        return {"published": sent, "acked": acked}


def generator_main(conn, index: int, host: str, port: int, wearables: list[Wearable]) -> None:
    """The generator process: commands in on ``conn`` (a Pipe end), results out."""
    gen = Generator(index, host, port, wearables)
    conn.send(("started", None))
    while True:
        command, arg = conn.recv()
        if command == "quit":
            gen.close()
            return
        if command == "step":
            started = time.perf_counter()
            cpu0 = cpu_seconds()
            due, packets, sos_index = gen.encode_step(arg)
            conn.send(("encoded", {"encode_s": time.perf_counter() - started, "encode_cpu_s": cpu_seconds() - cpu0,
                                   "frames": len(packets)}))
            conn.send(("done", gen.run_step(arg, due, packets, sos_index)))
        elif command == "flood":
            agency, duration_s, t0 = arg
            conn.send(("done", gen.flood(agency, duration_s, t0)))


def subscriber_main(conn, host: str, port: int, topic_filter: str) -> None:
    """A QoS 1 subscriber that only counts (the broker ceiling, no backend): ``("count", None)``
    returns the number of messages received so far."""
    sock = open_connection(host, port, f"vigil-bench-count-{os.getpid()}")
    sock.sendall(subscribe_packet(topic_filter))
    received = 0
    lock = threading.Lock()

    def read() -> None:
        nonlocal received
        buf = b""
        acks = bytearray()
        while True:
            try:
                chunk = sock.recv(1 << 18)
            except OSError:
                return
            if not chunk:
                return
            buf += chunk
            pos, n, count = 0, len(buf), 0
            while pos + 2 <= n:
                first = buf[pos]
                length, mult, i = 0, 1, pos + 1
                while i < n:
                    b = buf[i]
                    length += (b & 0x7F) * mult
                    mult *= 128
                    i += 1
                    if not b & 0x80:
                        break
                else:
                    break
                if i + length > n:
                    break
                if first >> 4 == 3:
                    count += 1
                    if (first >> 1) & 3:
                        tlen = (buf[i] << 8) | buf[i + 1]
                        acks += b"\x40\x02" + buf[i + 2 + tlen:i + 4 + tlen]
                pos = i + length
            buf = buf[pos:]
            if acks:
                sock.sendall(acks)
                acks = bytearray()
            with lock:
                received += count

    threading.Thread(target=read, daemon=True).start()
    conn.send(("started", None))
    while True:
        command, _ = conn.recv()
        if command == "quit":
            sock.close()
            return
        with lock:
            conn.send(("count", received))
