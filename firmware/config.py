# The wearable's crash-safe configuration: device id, device key, sequence-number reservation,
# the highest accepted command and the officer-safety tunables.
#
# One JSON file on the device's LittleFS, written atomically (write a temporary file, then
# rename it over the old one) and checked by a digest, so a power cut mid-write leaves either
# the old or the new file, never a torn one. It is written over USB serial at provisioning
# (`vigil firmware provision`) and by the firmware itself; no BLE path reads it: the radio code
# only ever receives derived frame keys (firmware/core.py), never this record.
import hashlib
import json
import os

from firmware import frame as F

CONFIG_PATH = "/vigil.json"
FORMAT_VERSION = 1
SEQ_BLOCK = 4096  # sequence numbers reserved per flash write: ~25 min of frames at 2.7/s

# set_config tunables: key id (the command's arg byte) -> (name, min, max). Values are
# whole units so they fit the command's u16 word. The device key is not among them: nothing
# received over the radio can read or replace it.
TUNABLES = {
    1: ("prealert_s", 5, 300),
    2: ("alarm_s", 10, 600),
    3: ("sos_hold_ds", 5, 100),
    4: ("motion_mg", 10, 1000),
    5: ("lying_deg", 20, 85),
    6: ("status_period_s", 5, 600),
    7: ("hr_service", 0, 1),
}
DEFAULT_SETTINGS = {
    "prealert_s": 20,
    "alarm_s": 30,
    "sos_hold_ds": 20,
    "motion_mg": 60,
    "lying_deg": 60,
    "status_period_s": 30,
    "hr_service": 1,
}


class ConfigError(ValueError):
    """The configuration is missing, torn or invalid; ``reason`` is unprovisioned, corrupt or
    invalid."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason + (": " + detail if detail else ""))
        self.reason = reason


def _canonical(rec: dict) -> str:
    # MicroPython's json has no sort_keys and its dicts are unordered: build the digest input
    # by hand, field by field, in a fixed order.
    settings = rec.get("settings", {})
    parts = [
        str(rec["v"]), str(rec["device_id"]), rec["key"], str(rec["seq_limit"]), str(rec["cmd_seq"]),
    ]
    for name in sorted(settings):
        parts.append("%s=%d" % (name, settings[name]))
    return "|".join(parts)


def _digest(rec: dict) -> str:
    return hashlib.sha256(_canonical(rec).encode()).digest()[:8].hex()


def validate(rec: dict) -> dict:
    """Check a decoded record; returns it, raises ConfigError('invalid')."""
    try:
        if rec["v"] != FORMAT_VERSION:
            raise ConfigError("invalid", "format version %r" % rec["v"])
        if not 0 <= rec["device_id"] <= 0xFFFFFFFF:
            raise ConfigError("invalid", "device id")
        key = bytes.fromhex(rec["key"])
        if len(key) != F.KEY_LEN:
            raise ConfigError("invalid", "the device key is 32 bytes")
        if not 0 <= rec["seq_limit"] <= 0x100000000 or rec["cmd_seq"] < -1:
            raise ConfigError("invalid", "sequence numbers")
        for name, value in rec.get("settings", {}).items():
            limits = tunable_limits(name)
            if limits is None or not limits[0] <= value <= limits[1]:
                raise ConfigError("invalid", "setting %s=%r" % (name, value))
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError("invalid", repr(exc))
    return rec


def tunable_limits(name: str):
    for _, (n, lo, hi) in TUNABLES.items():
        if n == name:
            return (lo, hi)
    return None


def encode(rec: dict) -> bytes:
    """The file's bytes for a record (adds the digest)."""
    validate(rec)
    out = {
        "v": rec["v"], "device_id": rec["device_id"], "key": rec["key"],
        "seq_limit": rec["seq_limit"], "cmd_seq": rec["cmd_seq"],
        "settings": rec.get("settings", {}),
    }
    out["check"] = _digest(out)
    return json.dumps(out).encode()


def decode(data: bytes) -> dict:
    """A record from the file's bytes; raises ConfigError('corrupt') for torn or edited files."""
    try:
        rec = json.loads(data)
    except ValueError:
        raise ConfigError("corrupt", "not JSON")
    if not isinstance(rec, dict) or "check" not in rec:
        raise ConfigError("corrupt", "no digest")
    try:
        ok = rec["check"] == _digest(rec)
    except (KeyError, TypeError, ValueError):
        ok = False
    if not ok:
        raise ConfigError("corrupt", "digest mismatch")
    del rec["check"]
    return validate(rec)


def new_record(device_id: int, key_hex: str, existing: dict | None = None) -> dict:
    """The record provisioning writes. Re-provisioning with the same key keeps the sequence
    reservation (a sequence number must never repeat for a key); a new key starts afresh."""
    key_hex = key_hex.strip().lower()
    rec = {"v": FORMAT_VERSION, "device_id": device_id, "key": key_hex, "seq_limit": 0,
           "cmd_seq": -1, "settings": {}}
    if existing is not None:
        rec["settings"] = existing.get("settings", {})
        if existing.get("key") == key_hex:
            rec["seq_limit"] = existing["seq_limit"]
            rec["cmd_seq"] = existing["cmd_seq"]
    return validate(rec)


def settings_of(rec: dict) -> dict:
    """Default settings overlaid with the record's."""
    out = {}
    for name in DEFAULT_SETTINGS:
        out[name] = DEFAULT_SETTINGS[name]
    for name in rec.get("settings", {}):
        out[name] = rec["settings"][name]
    return out


def _exists(path: str) -> bool:
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


class ConfigStore:
    """Atomic load and save of the configuration file."""

    def __init__(self, path: str = CONFIG_PATH) -> None:
        self.path = path
        self.tmp_path = path + ".tmp"

    def load(self) -> dict:
        main_err = None
        if _exists(self.path):
            try:
                rec = decode(_read(self.path))
                if _exists(self.tmp_path):
                    os.remove(self.tmp_path)  # a write that never reached its rename
                return rec
            except ConfigError as exc:
                main_err = exc
        if _exists(self.tmp_path):
            # Power failed between writing the new file and replacing the old one, on a file
            # system whose rename cannot replace: the complete new file is the truth.
            rec = decode(_read(self.tmp_path))
            os.rename(self.tmp_path, self.path)
            return rec
        if main_err is not None:
            raise main_err
        raise ConfigError("unprovisioned", "no configuration at " + self.path)

    def save(self, rec: dict) -> None:
        data = encode(rec)
        with open(self.tmp_path, "wb") as f:
            f.write(data)
            f.flush()
        try:
            os.rename(self.tmp_path, self.path)  # atomic on LittleFS and POSIX
        except OSError:
            # FAT cannot rename over an existing file: remove it first; load() then recovers
            # from the complete temporary file if power fails in between.
            os.remove(self.path)
            os.rename(self.tmp_path, self.path)
        sync = getattr(os, "sync", None)
        if sync is not None:
            sync()


class SeqExhausted(Exception):
    """The 32-bit sequence space of this key is used up: the device needs a new key."""


class SeqAllocator:
    """Sequence numbers that never repeat for a key, across crashes and reboots.

    Before a number is used, the end of its block is written to flash (persist(limit));
    after a reboot numbering resumes at the stored limit, so at most one block is skipped and
    none is reused. persist raising means no number is handed out."""

    def __init__(self, stored_limit: int, persist, block: int = SEQ_BLOCK) -> None:
        if block < 1:
            raise ValueError("block >= 1")
        self._next = stored_limit
        self._limit = stored_limit
        self._persist = persist
        self.block = block

    @property
    def limit(self) -> int:
        return self._limit

    def next(self) -> int:
        if self._next >= self._limit:
            new_limit = self._next + self.block
            if new_limit > 0x100000000:
                new_limit = 0x100000000
            if self._next > 0xFFFFFFFF:
                raise SeqExhausted("sequence numbers of this key are used up")
            self._persist(new_limit)
            self._limit = new_limit
        seq = self._next
        self._next += 1
        return seq
