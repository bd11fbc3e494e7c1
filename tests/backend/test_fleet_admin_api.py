"""The fleet admin's guards and one id format (issue 21), through the API and the CLI against a
running backend: giving a worn device to another officer names whom it was taken from; a device
or a gateway retired twice is refused (409) and keeps its first retirement; device ids in errors
and in the CLI's answers read as on the pages (0x0A000001); the firmware overview."""
from __future__ import annotations

import pytest

from backend.app.config import BackendSettings
from tests.backend.api_helpers import two_agencies
from tests.backend.test_api_cli import _one_line, _vigil

pytestmark = pytest.mark.integration


async def test_guards_and_one_id_format(database_url, mqtt_broker, agency, tmp_path):
    async with two_agencies(database_url, mqtt_broker, agency) as (backend, http, settings, a, b):
        admin = {"Authorization": f"Bearer {a.tokens['fleet_admin']}"}
        hexid = f"0x{a.device_id:08X}"

        r = await http.put(f"/api/v1/devices/{a.device_id}/assignment", headers=admin, json={"officer_id": a.other_officer_id})
        assert r.status_code == 200 and r.json()["taken_from"] == {"officer_id": a.officer_id, "officer_name": f"Officer One of {a.name}"}
        r = await http.put(f"/api/v1/devices/{a.device_id}/assignment", headers=admin, json={"officer_id": a.other_officer_id})
        assert r.json()["taken_from"] is None  # the same officer again: nobody loses it
        r = await http.put(f"/api/v1/devices/{a.device_id}/assignment", headers=admin, json={"officer_id": 999_999})
        assert r.status_code == 404 and "officer 999999" in r.text

        # ids as the pages show them, in errors...
        r = await http.get(f"/api/v1/devices/{b.device_id}", headers=admin)  # another agency's: not found
        assert r.status_code == 404 and f"0x{b.device_id:08X}" in r.text and str(b.device_id) not in r.text, r.text
        r = await http.post("/api/v1/devices", headers=admin, json={"device_id": a.device_id})
        assert r.status_code == 409 and hexid in r.text and str(a.device_id) not in r.text, r.text
        r = await http.post("/api/v1/gateways", headers=admin, json={"gateway_id": f"{a.name}-gw2", "devices": [b.device_id]})
        assert r.status_code == 404 and f"0x{b.device_id:08X}" in r.text and str(b.device_id) not in r.text, r.text
        r = await http.put(f"/api/v1/gateways/{a.gateway.gateway_id}/devices", headers=admin, json={"devices": [b.device_id]})
        assert r.status_code == 404 and f"0x{b.device_id:08X}" in r.text, r.text

        # ...and in the CLI's answers (its tables did already)
        env = {"VIGIL_TOKEN": a.tokens["fleet_admin"], "XDG_CONFIG_HOME": str(tmp_path)}
        api = ("--api", backend.url)
        code, out, err = await _vigil("device", "retire", hexid, *api, env=env)
        assert code == 0 and out.startswith("device_id") and hexid in out.splitlines()[0] and str(a.device_id) not in out, out + err
        assert "Officer Two of" in out  # retired_from
        first = (await http.get(f"/api/v1/devices/{a.device_id}", headers=admin)).json()["retired_at"]
        code, _, err = await _vigil("device", "retire", hexid, *api, env=env)
        line = _one_line(err)
        assert code == 1 and "already retired" in line and hexid in line and str(a.device_id) not in line, line
        assert (await http.get(f"/api/v1/devices/{a.device_id}", headers=admin)).json()["retired_at"] == first

        # gateways from the CLI: registered (credentials once, the broker's part said), listed with ids as on the pages
        code, out, err = await _vigil("gateways", "register", f"{a.name}-cli", "--devices", hexid, *api, env=env)
        assert code == 0 and "mqtt_password" in out and "not administered by this backend" in out, out + err
        code, out, err = await _vigil("gateways", "list", *api, env=env)
        row = next(line for line in out.splitlines() if line.startswith(f"{a.name}-cli "))
        assert hexid in row and str(a.device_id) not in row, out

        # gateways: retired once; the second time refused, the first time kept; the broker part said
        code, out, err = await _vigil("gateways", "retire", a.gateway.gateway_id, *api, env=env)
        assert code == 0 and "not administered by this backend" in out, out + err
        r = await http.post(f"/api/v1/gateways/{a.gateway.gateway_id}/retire", headers=admin)
        assert r.status_code == 409 and "already retired" in r.text
        r = await http.post(f"/api/v1/gateways/{b.gateway.gateway_id}/retire", headers=admin)  # another agency's
        assert r.status_code == 404
        listed = {g["gateway_id"]: g for g in (await http.get("/api/v1/gateways", headers=admin)).json()}
        assert listed[a.gateway.gateway_id]["retired_at"] is not None

        # firmware: nothing reported yet (a retired device is left out)
        fw = (await http.get("/api/v1/devices/firmware", headers=admin)).json()
        assert fw == {"current": None, "current_source": None, "versions": [], "outdated": [], "devices": 0}
        code, out, err = await _vigil("device", "firmware", *api, env=env)
        assert code == 0 and out.splitlines()[0].split() == ["current", "-"], out + err
        sup = {"Authorization": f"Bearer {a.tokens['supervisor']}"}
        assert (await http.get("/api/v1/devices/firmware", headers=sup)).status_code == 403


def test_the_firmware_release_setting_is_a_version():
    with pytest.raises(ValueError):
        BackendSettings(firmware_current="1.4")
    assert BackendSettings(firmware_current="1.10.0").firmware_current == "1.10.0"
