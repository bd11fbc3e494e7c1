"""A virtual BlueZ: the org.bluez D-Bus API that bleak 3.1 uses, served on a private bus.

The gateway's real bleak code talks to this service exactly as it would talk to bluetoothd
(../shared/notes/virtual-bluez.md); only the radio is simulated. One ``VirtualBlueZ`` owns one
private ``dbus-daemon`` and one adapter, ``/org/bluez/hci0``. Simulated peripherals are added with
:meth:`VirtualBlueZ.add_device` and drive their :class:`VirtualDevice` (notify, react to writes).

bleak keeps one BlueZ manager per event loop and never notices ``org.bluez`` changing owner, so
start a fresh ``VirtualBlueZ`` in every event loop (every test) and set
``DBUS_SYSTEM_BUS_ADDRESS`` before bleak's first use in that loop (``export_env=True`` does it).

Fault injection per device: :meth:`VirtualDevice.link_loss`, ``refuse_connects``,
``connect_delay`` / ``write_delay`` (slow devices) and ``in_range`` (stops advertising).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import select
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from gateway.exceptions import VirtualBlueZError

log = logging.getLogger("vigil.sim.bluez")

BLUEZ = "org.bluez"
ADAPTER_IFACE = "org.bluez.Adapter1"
DEVICE_IFACE = "org.bluez.Device1"
SERVICE_IFACE = "org.bluez.GattService1"
CHAR_IFACE = "org.bluez.GattCharacteristic1"
PROPS_IFACE = "org.freedesktop.DBus.Properties"
OM_IFACE = "org.freedesktop.DBus.ObjectManager"
ERR_FAILED = "org.bluez.Error.Failed"
ERR_NOT_CONNECTED = "org.bluez.Error.NotConnected"
ERR_NOT_SUPPORTED = "org.bluez.Error.NotSupported"
ERR_DOES_NOT_EXIST = "org.bluez.Error.DoesNotExist"
ERR_NOT_PERMITTED = "org.bluez.Error.NotPermitted"
ERR_UNKNOWN_METHOD = "org.freedesktop.DBus.Error.UnknownMethod"
ERR_UNKNOWN_OBJECT = "org.freedesktop.DBus.Error.UnknownObject"

# How often a device in range re-announces itself while discovery runs: bleak's scanner only
# reports a device on InterfacesAdded or a Device1 change seen during discovery.
ADVERT_INTERVAL_S = 0.1
# The negotiated ATT MTU reported to bleak: 244-byte frames fit one notification.
DEFAULT_MTU = 247
# A private dbus-daemon gets this long to print its address.
DAEMON_START_TIMEOUT_S = 10.0
# A large send buffer absorbs notification bursts; writability is still checked before a send.
SEND_BUFFER_BYTES = 4 << 20
# bluetoothd answers a Connect to a device that is not in range after its page timeout.
OUT_OF_RANGE_CONNECT_DELAY_S = 0.5

# The bus policy: everything allowed (a private bus of the test); generous queue limits so
# dbus-daemon never drops a notification because the gateway is briefly busy.
_BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <!-- private bus of the Vigil virtual BlueZ: open policy, large limits -->
  <type>vigil_virtual_bluez</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_type="method_return"/>
    <allow send_type="error"/>
    <allow receive_sender="*"/>
    <allow receive_type="method_call"/>
    <allow receive_type="signal"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
  </policy>
  <limit name="max_incoming_bytes">1000000000</limit>
  <limit name="max_outgoing_bytes">1000000000</limit>
  <limit name="max_message_size">33554432</limit>
  <limit name="max_completed_connections">4096</limit>
  <limit name="max_connections_per_user">4096</limit>
  <limit name="max_pending_service_starts">64</limit>
  <limit name="max_names_per_connection">512</limit>
  <limit name="max_match_rules_per_connection">4096</limit>
  <limit name="max_replies_per_connection">65536</limit>
  <limit name="reply_timeout">60000</limit>
</busconfig>
"""


def address_for_device_id(device_id: int) -> str:
    """A random static BLE address derived from a device id (two top bits set, as the spec wants)."""
    b = device_id.to_bytes(4, "big")
    return "C5:1E:%02X:%02X:%02X:%02X" % tuple(b)


@dataclass
class GattCharacteristicSpec:
    uuid: str
    flags: tuple[str, ...]  # BlueZ flag names: read, write, write-without-response, notify, indicate
    value: bytes = b""


@dataclass
class GattServiceSpec:
    uuid: str
    characteristics: list[GattCharacteristicSpec] = field(default_factory=list)


class VirtualCharacteristic:
    def __init__(self, path: str, service_path: str, spec: GattCharacteristicSpec, mtu: int):
        self.path = path
        self.service_path = service_path
        self.uuid = spec.uuid.lower()
        self.flags = list(spec.flags)
        self.value = bytes(spec.value)
        self.mtu = mtu
        self.notify_owners: set[str] = set()  # D-Bus unique names that called StartNotify

    @property
    def notifying(self) -> bool:
        return bool(self.notify_owners)

    def properties(self) -> dict[str, Variant]:
        return {
            "UUID": Variant("s", self.uuid),
            "Service": Variant("o", self.service_path),
            "Flags": Variant("as", self.flags),
            "Value": Variant("ay", self.value),
            "Notifying": Variant("b", self.notifying),
            "MTU": Variant("q", self.mtu),
        }


WriteHandler = Callable[[str, bytes], None]
StateHandler = Callable[[], None]


class VirtualDevice:
    """One simulated peripheral as BlueZ sees it. The peripheral's own logic (the wearable)
    calls :meth:`notify` and receives writes through ``on_write``.

    Fault injection (plain attributes, change them at any time):
    ``refuse_connects``  number of next Connect calls to refuse (-1: refuse all)
    ``connect_delay``    seconds a Connect takes (slow device)
    ``write_delay``      seconds a WriteValue takes (slow device)
    ``in_range``         False: stops advertising; Connect fails after a page timeout
    """

    def __init__(self, bluez: "VirtualBlueZ", path: str, address: str, name: str,
                 service_uuids: list[str], services: list[GattServiceSpec], rssi: int,
                 manufacturer_data: dict[int, bytes] | None):
        self.bluez = bluez
        self.path = path
        self.address = address
        self.name = name
        self.service_uuids = [u.lower() for u in service_uuids]
        self.rssi = rssi
        self.manufacturer_data = dict(manufacturer_data or {})
        self.connected = False
        self.services_resolved = False
        self.connection_owner: str | None = None
        self.gatt_exported = False
        self.refuse_connects = 0
        self.connect_delay = 0.0
        self.write_delay = 0.0
        self.in_range = True
        self.on_write: WriteHandler | None = None
        self.on_state_change: StateHandler | None = None  # link or notification state changed
        self.connects = 0
        self.link_losses = 0
        self.notifications_sent = 0
        self._state_changed = asyncio.Event()
        self.services: list[tuple[str, str]] = []  # (path, uuid)
        self.chars: dict[str, VirtualCharacteristic] = {}  # by uuid
        self.chars_by_path: dict[str, VirtualCharacteristic] = {}
        handle = 0x000A
        for service in services:
            service_path = f"{path}/service{handle:04x}"
            self.services.append((service_path, service.uuid.lower()))
            handle += 1
            for spec in service.characteristics:
                char = VirtualCharacteristic(f"{service_path}/char{handle:04x}", service_path, spec,
                                             bluez.mtu)
                self.chars[char.uuid] = char
                self.chars_by_path[char.path] = char
                handle += 2  # value handle plus its CCCD, as on a real GATT server

    # ---- what the peripheral's logic uses -------------------------------------------------

    def is_notifying(self, uuid: str) -> bool:
        char = self.chars.get(uuid.lower())
        return bool(self.connected and char and char.notifying)

    async def notify(self, uuid: str, value: bytes) -> bool:
        """Send one notification. False when it cannot go out (no link, or notifications for
        that characteristic are not enabled); the peripheral then keeps the data itself."""
        char = self.chars[uuid.lower()]
        if not (self.connected and char.notifying):
            return False
        char.value = bytes(value)
        await self.bluez._properties_changed(char.path, CHAR_IFACE, {"Value": Variant("ay", char.value)})
        self.notifications_sent += 1
        return True

    async def link_loss(self) -> None:
        """The radio link drops (out of range, interference): Connected goes False at once."""
        if self.connected:
            self.link_losses += 1
            await self._set_disconnected("link loss")

    async def wait_state(self, predicate: Callable[["VirtualDevice"], bool], timeout: float) -> None:
        """Wait until ``predicate(device)`` holds (connected, notifying ...)."""
        async with asyncio.timeout(timeout):
            while not predicate(self):
                self._state_changed.clear()
                await self._state_changed.wait()

    # ---- D-Bus object state ---------------------------------------------------------------

    def device_properties(self) -> dict[str, Variant]:
        props = {
            "Address": Variant("s", self.address),
            "AddressType": Variant("s", "random"),
            "Name": Variant("s", self.name),
            "Alias": Variant("s", self.name),
            "Adapter": Variant("o", self.bluez.adapter_path),
            "Connected": Variant("b", self.connected),
            "ServicesResolved": Variant("b", self.services_resolved),
            "Paired": Variant("b", False),
            "Bonded": Variant("b", False),
            "Trusted": Variant("b", False),
            "Blocked": Variant("b", False),
            "LegacyPairing": Variant("b", False),
            "UUIDs": Variant("as", self.service_uuids),
            "RSSI": Variant("n", self.rssi),
            "TxPower": Variant("n", 0),
            "ManufacturerData": Variant("a{qv}", {k: Variant("ay", v) for k, v in self.manufacturer_data.items()}),
            "ServiceData": Variant("a{sv}", {}),
        }
        return props

    def gatt_objects(self) -> dict[str, dict[str, dict[str, Variant]]]:
        objects: dict[str, dict[str, dict[str, Variant]]] = {}
        for service_path, uuid in self.services:
            objects[service_path] = {SERVICE_IFACE: {
                "UUID": Variant("s", uuid),
                "Device": Variant("o", self.path),
                "Primary": Variant("b", True),
                "Includes": Variant("ao", []),
            }}
        for char in self.chars.values():
            objects[char.path] = {CHAR_IFACE: char.properties()}
        return objects

    def _touch(self) -> None:
        self._state_changed.set()
        if self.on_state_change is not None:
            self.on_state_change()

    async def _set_disconnected(self, why: str) -> None:
        if not self.connected:
            return
        log.debug("%s: disconnected (%s)", self.name, why)
        self.connected = False
        self.services_resolved = False
        self.connection_owner = None
        for char in self.chars.values():
            if char.notify_owners:
                char.notify_owners.clear()
                await self.bluez._properties_changed(char.path, CHAR_IFACE, {"Notifying": Variant("b", False)})
        await self.bluez._properties_changed(self.path, DEVICE_IFACE, {
            "ServicesResolved": Variant("b", False), "Connected": Variant("b", False)})
        self._touch()


class VirtualBlueZ:
    """A private dbus-daemon plus an ``org.bluez`` service on it; an async context manager.

    >>> async with VirtualBlueZ() as bluez:          # sets DBUS_SYSTEM_BUS_ADDRESS for bleak
    ...     dev = bluez.add_device(0xC51E0001, "VG-00000001", [SERVICE], gatt)
    """

    def __init__(self, *, adapter: str = "hci0", export_env: bool = True,
                 advert_interval: float = ADVERT_INTERVAL_S, mtu: int = DEFAULT_MTU,
                 seed: int = 0, workdir: Path | None = None):
        self.adapter_path = f"/org/bluez/{adapter}"
        self.export_env = export_env
        self.advert_interval = advert_interval
        self.mtu = mtu
        self.devices: dict[str, VirtualDevice] = {}  # by object path
        self.discovery_sessions = 0
        self._rng = random.Random(seed)
        self._workdir = workdir
        self._own_workdir = False
        self._daemon: asyncio.subprocess.Process | None = None
        self._bus: MessageBus | None = None
        self._bus_address: str | None = None
        self._previous_env: str | None = None
        self._tasks: set[asyncio.Task] = set()
        self._send_lock = asyncio.Lock()
        self._last_send: asyncio.Future | None = None
        self._advertiser: asyncio.Task | None = None
        self._discovering_changed = asyncio.Event()

    # ---- lifecycle ---------------------------------------------------------------------------

    @property
    def bus_address(self) -> str:
        if not self._bus_address:
            raise VirtualBlueZError("the virtual BlueZ is not running")
        return self._bus_address

    @property
    def daemon_pid(self) -> int | None:
        return self._daemon.pid if self._daemon is not None else None

    @property
    def discovering(self) -> bool:
        return self.discovery_sessions > 0

    async def __aenter__(self) -> "VirtualBlueZ":
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    async def start(self) -> None:
        binary = shutil.which("dbus-daemon")
        if not binary:
            raise VirtualBlueZError("dbus-daemon is not installed: apt-get install dbus")
        if self._workdir is None:
            self._workdir = Path(tempfile.mkdtemp(prefix="vigil-bluez-"))
            self._own_workdir = True
        self._workdir.mkdir(parents=True, exist_ok=True)
        conf = self._workdir / "bus.conf"
        conf.write_text(_BUS_CONFIG.format(socket=self._workdir / "bus"))
        self._daemon = await asyncio.create_subprocess_exec(
            binary, f"--config-file={conf}", "--nofork", "--nopidfile", "--print-address=1",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            async with asyncio.timeout(DAEMON_START_TIMEOUT_S):
                line = await self._daemon.stdout.readline()
        except TimeoutError as exc:
            raise VirtualBlueZError("dbus-daemon did not print its address") from exc
        if not line:
            err = (await self._daemon.stderr.read()).decode(errors="replace")
            raise VirtualBlueZError(f"dbus-daemon failed to start: {err.strip()}")
        self._bus_address = line.decode().strip()
        self._bus = await MessageBus(bus_address=self._bus_address).connect()
        with contextlib.suppress(OSError):
            self._bus._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
        self._bus.add_message_handler(self._on_message)
        await self._call_bus("AddMatch", "s", ["type='signal',sender='org.freedesktop.DBus',"
                                               "member='NameOwnerChanged'"])
        reply = await self._call_bus("RequestName", "su", [BLUEZ, 4])  # DO_NOT_QUEUE
        if reply.body[0] != 1:
            raise VirtualBlueZError(f"could not own {BLUEZ} on the private bus (reply {reply.body[0]})")
        await self._emit(OM_IFACE, "/", "InterfacesAdded", "oa{sa{sv}}",
                         [self.adapter_path, self._adapter_objects()])
        self._advertiser = self._spawn(self._advertise(), name="virtual-bluez-advertiser")
        if self.export_env:
            self._previous_env = os.environ.get("DBUS_SYSTEM_BUS_ADDRESS")
            os.environ["DBUS_SYSTEM_BUS_ADDRESS"] = self._bus_address
        log.info("virtual BlueZ on %s", self._bus_address)

    async def stop(self) -> None:
        _forget_bleak_manager()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        if self._bus is not None:
            self._bus.disconnect()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._bus.wait_for_disconnect(), 2)
            self._bus = None
        if self._daemon is not None and self._daemon.returncode is None:
            self._daemon.terminate()
            try:
                await asyncio.wait_for(self._daemon.wait(), 5)
            except TimeoutError:
                self._daemon.kill()
                await self._daemon.wait()
        self._daemon = None
        if self.export_env and self._bus_address:
            if self._previous_env is None:
                os.environ.pop("DBUS_SYSTEM_BUS_ADDRESS", None)
            else:
                os.environ["DBUS_SYSTEM_BUS_ADDRESS"] = self._previous_env
        self._bus_address = None
        if self._own_workdir and self._workdir:
            shutil.rmtree(self._workdir, ignore_errors=True)

    # ---- devices ----------------------------------------------------------------------------

    def add_device(self, address: str, name: str, service_uuids: Iterable[str],
                   services: Iterable[GattServiceSpec], *, rssi: int = -60,
                   manufacturer_data: dict[int, bytes] | None = None) -> VirtualDevice:
        """Make a peripheral visible to BlueZ (InterfacesAdded, as when first seen by a scan)."""
        path = f"{self.adapter_path}/dev_{address.upper().replace(':', '_')}"
        if path in self.devices:
            raise VirtualBlueZError(f"device {address} already exists")
        device = VirtualDevice(self, path, address.upper(), name, list(service_uuids),
                               list(services), rssi, manufacturer_data)
        self.devices[path] = device
        self._spawn(self._emit(OM_IFACE, "/", "InterfacesAdded", "oa{sa{sv}}",
                               [path, {DEVICE_IFACE: device.device_properties()}]))
        return device

    async def remove_device(self, device: VirtualDevice) -> None:
        await device._set_disconnected("removed")
        objects = list(device.gatt_objects()) if device.gatt_exported else []
        for path in reversed(objects):
            await self._emit(OM_IFACE, "/", "InterfacesRemoved", "oas",
                             [path, list(self._object(path) or {})])
        await self._emit(OM_IFACE, "/", "InterfacesRemoved", "oas", [device.path, [DEVICE_IFACE]])
        self.devices.pop(device.path, None)

    # ---- object tree --------------------------------------------------------------------------

    def _adapter_objects(self) -> dict[str, dict[str, Variant]]:
        return {ADAPTER_IFACE: {
            "Address": Variant("s", "00:1A:7D:DA:71:13"),
            "AddressType": Variant("s", "public"),
            "Name": Variant("s", "vigil-virtual"),
            "Alias": Variant("s", "vigil-virtual"),
            "Class": Variant("u", 0),
            "Powered": Variant("b", True),
            "Discoverable": Variant("b", False),
            "Pairable": Variant("b", False),
            "Discovering": Variant("b", self.discovering),
            "UUIDs": Variant("as", []),
            "Roles": Variant("as", ["central", "peripheral"]),
            "Modalias": Variant("s", "usb:v1D6Bp0246d0540"),
        }}

    def _managed_objects(self) -> dict[str, dict[str, dict[str, Variant]]]:
        objects = {self.adapter_path: self._adapter_objects()}
        for device in self.devices.values():
            objects[device.path] = {DEVICE_IFACE: device.device_properties()}
            if device.gatt_exported:
                objects.update(device.gatt_objects())
        return objects

    def _object(self, path: str) -> dict[str, dict[str, Variant]] | None:
        return self._managed_objects().get(path)

    # ---- sending (with the EAGAIN guard) -------------------------------------------------------

    async def _send(self, msg: Message) -> None:
        """Send one message. dbus-fast drops its connection when a write hits EAGAIN on a full
        socket (python-dbus-next #153), so sends are serialised and each waits for the socket to
        be writable before dbus-fast writes synchronously."""
        bus = self._bus
        if bus is None or not bus.connected:
            return
        async with self._send_lock:
            if self._last_send is not None and not self._last_send.done():
                await self._last_send
            await self._wait_writable(bus)
            if not bus.connected:
                return
            self._last_send = bus.send(msg)

    async def _wait_writable(self, bus: MessageBus) -> None:
        fd = bus._sock.fileno()
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        if poller.poll(0):
            return
        loop = asyncio.get_running_loop()
        ready = loop.create_future()
        loop.add_writer(fd, lambda: ready.done() or ready.set_result(None))
        try:
            await ready
        finally:
            loop.remove_writer(fd)

    async def _emit(self, interface: str, path: str, member: str, signature: str, body: list) -> None:
        await self._send(Message.new_signal(path, interface, member, signature, body))

    async def _properties_changed(self, path: str, interface: str, changed: dict[str, Variant]) -> None:
        await self._emit(PROPS_IFACE, path, "PropertiesChanged", "sa{sv}as", [interface, changed, []])

    async def _call_bus(self, member: str, signature: str, body: list) -> Message:
        reply = await self._bus.call(Message(
            destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
            interface="org.freedesktop.DBus", member=member, signature=signature, body=body))
        if reply.message_type == MessageType.ERROR:
            raise VirtualBlueZError(f"{member} failed: {reply.error_name} {reply.body}")
        return reply

    def _spawn(self, coro, name: str | None = None) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("virtual BlueZ task failed", exc_info=task.exception())

    # ---- advertising -----------------------------------------------------------------------------

    async def _advertise(self) -> None:
        """While discovery runs, every device in range and not connected re-announces itself
        with a slightly changed RSSI, as advertisements do."""
        while True:
            if not self.discovering:
                self._discovering_changed.clear()
                await self._discovering_changed.wait()
                continue
            for device in list(self.devices.values()):
                if device.in_range and not device.connected and device.path in self.devices:
                    device.rssi = max(-100, min(-30, device.rssi + self._rng.randint(-2, 2)))
                    await self._properties_changed(device.path, DEVICE_IFACE, {"RSSI": Variant("n", device.rssi)})
            await asyncio.sleep(self.advert_interval)

    # ---- incoming calls ---------------------------------------------------------------------------

    def _on_message(self, msg: Message) -> bool:
        if msg.message_type == MessageType.SIGNAL:
            if msg.member == "NameOwnerChanged" and msg.sender == "org.freedesktop.DBus":
                name, _old, new = msg.body
                if name.startswith(":") and not new:
                    self._spawn(self._client_vanished(name))
            return False
        if msg.message_type != MessageType.METHOD_CALL:
            return False
        self._spawn(self._dispatch(msg))
        return True

    async def _reply(self, msg: Message, signature: str = "", body: list | None = None) -> None:
        await self._send(Message.new_method_return(msg, signature, body or []))

    async def _error(self, msg: Message, name: str, text: str) -> None:
        await self._send(Message.new_error(msg, name, text))

    async def _dispatch(self, msg: Message) -> None:
        try:
            await self._handle(msg)
        except _CallError as exc:
            await self._error(msg, exc.name, exc.text)

    async def _handle(self, msg: Message) -> None:
        iface, member, path = msg.interface, msg.member, msg.path
        if iface == OM_IFACE and member == "GetManagedObjects":
            await self._reply(msg, "a{oa{sa{sv}}}", [self._managed_objects()])
            return
        if iface == PROPS_IFACE:
            await self._handle_properties(msg)
            return
        if iface == "org.freedesktop.DBus.Introspectable":
            await self._reply(msg, "s", ['<node name="%s"></node>' % path])
            return
        if path == self.adapter_path and iface == ADAPTER_IFACE:
            await self._handle_adapter(msg)
            return
        device = self.devices.get(path)
        if device is not None and iface == DEVICE_IFACE:
            await self._handle_device(msg, device)
            return
        char = self._char_at(path)
        if char is not None and iface == CHAR_IFACE:
            await self._handle_char(msg, *char)
            return
        raise _CallError(ERR_UNKNOWN_METHOD, f"{iface}.{member} on {path}")

    def _char_at(self, path: str) -> tuple[VirtualDevice, VirtualCharacteristic] | None:
        device = self.devices.get(path[:-21])  # .../dev_XX/serviceXXXX/charYYYY
        if device is None or not device.gatt_exported:
            return None
        char = device.chars_by_path.get(path)
        return (device, char) if char else None

    async def _handle_properties(self, msg: Message) -> None:
        objects = self._object(msg.path) or {}
        if msg.member == "GetAll":
            await self._reply(msg, "a{sv}", [objects.get(msg.body[0], {})])
        elif msg.member == "Get":
            props = objects.get(msg.body[0], {})
            if msg.body[1] not in props:
                raise _CallError("org.freedesktop.DBus.Error.InvalidArgs", f"no property {msg.body[1]}")
            await self._reply(msg, "v", [props[msg.body[1]]])
        elif msg.member == "Set":
            await self._reply(msg)  # Trusted and friends: accepted, nothing to model
        else:
            raise _CallError(ERR_UNKNOWN_METHOD, msg.member)

    async def _handle_adapter(self, msg: Message) -> None:
        member = msg.member
        if member == "SetDiscoveryFilter":
            await self._reply(msg)
        elif member == "StartDiscovery":
            # All scanners of one bleak manager share a connection: count sessions.
            self.discovery_sessions += 1
            await self._reply(msg)
            if self.discovery_sessions == 1:
                await self._properties_changed(self.adapter_path, ADAPTER_IFACE, {"Discovering": Variant("b", True)})
                self._discovering_changed.set()
        elif member == "StopDiscovery":
            if self.discovery_sessions == 0:
                raise _CallError("org.bluez.Error.NotReady", "no discovery running")
            self.discovery_sessions -= 1
            await self._reply(msg)
            if self.discovery_sessions == 0:
                await self._properties_changed(self.adapter_path, ADAPTER_IFACE, {"Discovering": Variant("b", False)})
        elif member == "RemoveDevice":
            device = self.devices.get(msg.body[0])
            if device is None:
                raise _CallError(ERR_DOES_NOT_EXIST, "no such device")
            await self._reply(msg)
            await self.remove_device(device)
        else:
            raise _CallError(ERR_UNKNOWN_METHOD, member)

    async def _handle_device(self, msg: Message, device: VirtualDevice) -> None:
        member = msg.member
        if member == "Connect":
            await self._connect(msg, device)
        elif member == "Disconnect":
            await device._set_disconnected("disconnect requested")
            await self._reply(msg)
        elif member in ("Pair", "CancelPairing"):
            raise _CallError(ERR_NOT_SUPPORTED, "the virtual BlueZ does not pair")
        else:
            raise _CallError(ERR_UNKNOWN_METHOD, member)

    async def _connect(self, msg: Message, device: VirtualDevice) -> None:
        if device.connected:
            await self._reply(msg)
            return
        if not device.in_range:
            await asyncio.sleep(OUT_OF_RANGE_CONNECT_DELAY_S)
            raise _CallError(ERR_FAILED, "Page Timeout")
        if device.refuse_connects:
            if device.refuse_connects > 0:
                device.refuse_connects -= 1
            raise _CallError(ERR_FAILED, "Connection refused (virtual fault injection)")
        if device.connect_delay:
            await asyncio.sleep(device.connect_delay)
        device.connected = True
        device.connection_owner = msg.sender
        device.connects += 1
        await self._properties_changed(device.path, DEVICE_IFACE, {"Connected": Variant("b", True)})
        await self._reply(msg)
        if not device.gatt_exported:
            # GATT objects exist before ServicesResolved goes True (bleak reads them then).
            device.gatt_exported = True
            for path, interfaces in device.gatt_objects().items():
                await self._emit(OM_IFACE, "/", "InterfacesAdded", "oa{sa{sv}}", [path, interfaces])
        if device.connected:
            device.services_resolved = True
            await self._properties_changed(device.path, DEVICE_IFACE, {"ServicesResolved": Variant("b", True)})
        device._touch()

    async def _handle_char(self, msg: Message, device: VirtualDevice, char: VirtualCharacteristic) -> None:
        member = msg.member
        if not device.connected and member in ("StartNotify", "ReadValue", "WriteValue"):
            raise _CallError(ERR_NOT_CONNECTED, "Not connected")
        if member == "StartNotify":
            if "notify" not in char.flags and "indicate" not in char.flags:
                raise _CallError(ERR_NOT_SUPPORTED, "Operation is not supported")
            first = not char.notify_owners
            char.notify_owners.add(msg.sender)
            await self._reply(msg)
            if first:
                await self._properties_changed(char.path, CHAR_IFACE, {"Notifying": Variant("b", True)})
            device._touch()
        elif member == "StopNotify":
            char.notify_owners.discard(msg.sender)
            await self._reply(msg)
            if not char.notify_owners:
                await self._properties_changed(char.path, CHAR_IFACE, {"Notifying": Variant("b", False)})
            device._touch()
        elif member == "ReadValue":
            if "read" not in char.flags:
                raise _CallError(ERR_NOT_PERMITTED, "Read not permitted")
            await self._reply(msg, "ay", [char.value])
        elif member == "WriteValue":
            if "write" not in char.flags and "write-without-response" not in char.flags:
                raise _CallError(ERR_NOT_PERMITTED, "Write not permitted")
            if device.write_delay:
                await asyncio.sleep(device.write_delay)
            if not device.connected:
                raise _CallError(ERR_FAILED, "Not connected")
            data = bytes(msg.body[0])
            if device.on_write is not None:
                try:
                    device.on_write(char.uuid, data)
                except Exception as exc:  # the peripheral rejects the value: an ATT error
                    raise _CallError(ERR_FAILED, "Operation failed with ATT error: 0x80") from exc
            char.value = data
            await self._reply(msg)
        else:
            raise _CallError(ERR_UNKNOWN_METHOD, member)

    async def _client_vanished(self, unique_name: str) -> None:
        """A D-Bus client (a gateway process) went away: its notification sessions end, and a
        link it opened drops (modelled as bluetoothd's idle disconnect)."""
        for device in list(self.devices.values()):
            for char in device.chars.values():
                if unique_name in char.notify_owners:
                    char.notify_owners.discard(unique_name)
                    if not char.notify_owners:
                        await self._properties_changed(char.path, CHAR_IFACE, {"Notifying": Variant("b", False)})
            if device.connection_owner == unique_name:
                await device._set_disconnected("client left the bus")
            device._touch()


def _forget_bleak_manager() -> None:
    """bleak keeps one BlueZ manager per event loop, connected to whatever owned org.bluez when
    it started. Before this virtual BlueZ goes away, close that manager quietly and drop it, so
    that bleak starts afresh against the next virtual BlueZ in this loop (private bleak state;
    simulator only)."""
    try:
        from bleak.backends.bluezdbus import manager as bleak_manager

        instance = bleak_manager._global_instances.pop(asyncio.get_running_loop(), None)
        if instance is None:
            return
        if instance._bus_watcher_task is not None:
            instance._bus_watcher_task.cancel()
        if instance._bus is not None:
            instance._bus.disconnect()
    except (ImportError, AttributeError):  # a bleak without this internal state: nothing to do
        return


class _CallError(Exception):
    def __init__(self, name: str, text: str):
        super().__init__(f"{name}: {text}")
        self.name = name
        self.text = text
