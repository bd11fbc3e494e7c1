# Runs under genuine MicroPython (firmware/tools/mprun.mjs): boots firmware main() on a host
# board (emulated chips, fake BLE with a scripted central) on a virtual clock, and prints what
# it observed as one "OBSERVED <json>" line; tests/firmware/test_fw_boot.py judges it.
# /boot.json says which case: {"case": "provisioned" | "unprovisioned"}.
import json
import sys

sys.path.insert(0, "/repo")

from firmware.tools import vasyncio  # noqa: E402

sys.modules["asyncio"] = vasyncio  # the port's asyncio, on a virtual clock
sys.modules["time"] = vasyncio.time

from firmware.tools import hostboard  # noqa: E402

hostboard.install()

from firmware import app, config, profile  # noqa: E402
from firmware import board as B  # noqa: E402
from firmware import frame as F  # noqa: E402
from firmware.tools.emulators import wearable_bus  # noqa: E402
from firmware.tools.waveforms import MotionScript, PpgWaveform  # noqa: E402

DEVICE = 0x00C0FFEE
KEY = bytes(range(100, 132))
KEYS = F.DeviceKeys(KEY)
CONN = 1
SYNC_EPOCH_MS = 1800000000000

with open("/boot.json") as f:
    case = json.load(f)["case"]

board = hostboard.HostBoard(wearable_bus(MotionScript([("stand", 1000)]), PpgWaveform(hr_bpm=75)))
hostboard.use(board)
loop = vasyncio.VirtualLoop()
vasyncio.use(loop)
ble = board.ble
store = config.ConfigStore("/vigil.json")
out = {"case": case}

if case == "unprovisioned":
    try:
        import os

        os.remove("/vigil.json")
    except OSError:
        pass
    app.main()
    toggles = []
    for timer in board.timers:
        for _ in range(4):
            timer.fire()
            toggles.append(board.led)
    out.update(returned=True, timers=[t.period for t in board.timers], led_toggles=toggles,
               wdt=board.wdt is not None, ble_active=ble.is_active, advertising=len(ble.advertising),
               loop_steps=loop.steps)
    print("OBSERVED " + json.dumps(out))
    raise SystemExit

store.save(config.new_record(DEVICE, "".join("%02x" % b for b in KEY)))
cmd_seq = [1000]
log = {"acked": None, "ack_at": None, "sync_at": None}


def command(code, arg=0, word=0, time_ms=0):
    cmd_seq[0] += 1
    data = F.seal(KEYS, F.TYPE_COMMAND, DEVICE, cmd_seq[0], time_ms, F.encode_command(code, arg, word))
    ble.central_write(CONN, ble.handle_of(profile.CONTROL_CHAR_UUID), data)


def sos_seq():
    h_event = ble.handle_of(profile.EVENT_CHAR_UUID)
    for c, h, data in ble.notifications:
        if h == h_event:
            return F.parse_header(data).seq
    return None


def ack(now):
    log["acked"] = sos_seq()
    log["ack_at"] = now
    command(F.COMMAND_EVENT_ACK, 0, log["acked"] & 0xFFFF)


def sync(now):
    log["sync_at"] = now
    command(F.COMMAND_TIME_SYNC, time_ms=SYNC_EPOCH_MS)


script = [
    (1000, lambda now: ble.central_connect(CONN)),
    (1010, lambda now: ble.exchange_mtu(CONN, 247)),
    (3000, lambda now: board.press(True)),  # SOS held 2.5 s
    (5500, lambda now: board.press(False)),
    (10000, ack),
    (12000, sync),
]
received_at = []  # virtual time of each notification


def hook(now):
    board.tick(now)
    while script and script[0][0] <= now:
        script.pop(0)[1](now)
    while len(received_at) < len(ble.notifications):
        received_at.append(now)


loop.hook = hook
loop.stop_at = 30000
app.main(store)

h_tele = ble.handle_of(profile.TELEMETRY_CHAR_UUID)
h_event = ble.handle_of(profile.EVENT_CHAR_UUID)
frames = []
for i in range(len(ble.notifications)):
    c, h, data = ble.notifications[i]
    if h not in (h_tele, h_event):
        continue
    header, payload = F.open_frame(data, KEYS)  # raises if not sealed with the device key
    item = {"at": received_at[i] if i < len(received_at) else loop.now, "type": header.frame_type,
            "seq": header.seq, "time_ms": header.time_ms, "flags": header.flags}
    if header.frame_type == F.TYPE_TELEMETRY:
        rate, led, ppg, accel = F.decode_telemetry(payload)
        item["rate"] = rate
        item["samples"] = len(ppg)
    elif header.frame_type == F.TYPE_EVENT:
        item["code"] = F.decode_event(payload)[0]
    frames.append(item)
motor = board.motor
out.update(
    cpu_hz=board.cpu_hz, wdt_timeout=board.wdt.timeout if board.wdt else None,
    wdt_feeds=board.wdt.feeds if board.wdt else 0, advertising=[a[0] for a in ble.advertising],
    adv_data=ble.advertising[0][1].hex() if ble.advertising else "",
    resp_data=ble.advertising[0][2].hex() if ble.advertising else "",
    frames=frames, motor=motor.history if motor else [], acked=log["acked"], ack_at=log["ack_at"],
    sync_at=log["sync_at"], sync_epoch_ms=SYNC_EPOCH_MS, now=loop.now, loop_steps=loop.steps,
    stored=config.ConfigStore("/vigil.json").load()["seq_limit"], imu_int_pin=B.PIN_IMU_INT1,
    implementation=[sys.implementation.name, list(sys.implementation.version[:3])],
)
print("OBSERVED " + json.dumps(out))
