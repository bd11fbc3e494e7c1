"""`vigil device provision FIRST --count N --keys-out FILE`: a test fleet in one command. Every
device goes through the API (and so into the audit chain), the keys land in a file only its
owner can read, in the format `vigil simulate --keys` reads; nothing is overwritten or printed."""
from __future__ import annotations

import argparse
import json
import os
import stat

import pytest

from backend.privacy import audit
from firmware import frame as F
from gateway.commands import _load_keys
from tests.backend.api_helpers import two_agencies
from tests.backend.test_api_fleet import _vigil

pytestmark = pytest.mark.integration

FIRST = 0x0A0000C0


async def test_provision_a_fleet_into_an_owner_only_keys_file(database_url, mqtt_broker, agency, tmp_path):
    async with two_agencies(database_url, mqtt_broker, agency) as (backend, http, settings, a, _):
        api = ["--api", backend.url, "--token", a.tokens["fleet_admin"]]
        keys_file = tmp_path / "fleet-keys.json"
        code, out = await _vigil("device", "provision", hex(FIRST), "--count", "5", "--keys-out", str(keys_file), *api)
        assert code == 0, out
        assert "provisioned 5 device(s)" in out
        assert stat.S_IMODE(os.stat(keys_file).st_mode) == 0o600
        keys = json.loads(keys_file.read_text())
        assert sorted(int(k) for k in keys) == list(range(FIRST, FIRST + 5))
        assert all(len(bytes.fromhex(v)) == 32 for v in keys.values()) and len(set(keys.values())) == 5
        assert not any(v in out for v in keys.values())  # never on the terminal

        # the simulator reads the file as it is
        loaded = _load_keys(argparse.Namespace(keys=keys_file, officers=5, first_device_id=0))
        assert loaded == {int(k): bytes.fromhex(v) for k, v in keys.items()}
        # each key is the one the backend holds: a frame sealed with it verifies there
        record = backend.runtime.registry.get(FIRST + 3)
        sealed = F.seal(F.DeviceKeys(loaded[FIRST + 3]), F.TYPE_STATUS, FIRST + 3, 1, 0, F.encode_status(90, 3900, (1, 0, 0), 0, 0))
        assert F.open_frame(sealed, record.keys)[0].device_id == FIRST + 3

        # every device in the audit chain, by the fleet admin, without its key
        await audit.drain_outbox(backend.runtime.engine)
        chain = await audit.read_chain(backend.runtime.engine)
        inserted = {e["subject"] for e in chain if e["action"] == "provisioning.devices.insert"}
        assert {f"devices:{d}" for d in range(FIRST, FIRST + 5)} <= inserted
        assert not any(v in json.dumps(chain, default=str) for v in keys.values())

        # never overwritten; a fleet's keys never go to the terminal
        before = keys_file.read_bytes()
        code, _ = await _vigil("device", "provision", hex(FIRST + 10), "--count", "2", "--keys-out", str(keys_file), *api)
        assert code == 2 and keys_file.read_bytes() == before
        code, _ = await _vigil("device", "provision", hex(FIRST + 10), "--count", "2", *api)
        assert code == 2

        # a clash part-way keeps the keys made before it (a key is shown only once)
        partial = tmp_path / "partial.json"
        code, _ = await _vigil("device", "provision", hex(FIRST - 2), "--count", "4", "--keys-out", str(partial), *api)
        assert code == 1  # FIRST exists
        assert list(json.loads(partial.read_text())) == [str(FIRST - 2), str(FIRST - 1)]
