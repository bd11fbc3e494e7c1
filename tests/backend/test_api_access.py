"""Every route × every role, from the one access table; agency isolation; tokens that expire
or are revoked. Real PostgreSQL and Mosquitto behind a running backend."""
from __future__ import annotations

import asyncio
import json
import uuid

import httpx
import jwt
import pytest
import websockets

from backend.api.access import ACCESS, iter_routes
from backend.incidents.rules import OUTCOME_LABELS, PRIORITY_LABELS, STATE_LABELS
from backend.identity.security import issue_token
from tests.backend.api_helpers import login, two_agencies
from tests.backend.conftest import live_url

pytestmark = pytest.mark.integration

ROLES = ("officer", "supervisor", "fleet_admin", "auditor", "gateway", "anonymous")
# A body that passes validation where one is easy to give, so an allowed call gets past 422.
BODIES = {
    ("POST", "/api/v1/alerts/{alert_id}/resolve"): {"outcome": "test"},
    ("PUT", "/api/v1/devices/{device_id}/assignment"): {"officer_id": 0},
}


def _fill(path: str, a) -> str:
    return path.format(officer_id=a.officer_id, device_id=a.device_id, gateway_id=a.gateway.gateway_id,
                       alert_id=uuid.uuid4(), user_id=0)


async def _status(http: httpx.AsyncClient, method: str, url: str, token: str | None, body) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if url.endswith("/events"):  # a stream: the status line is the answer
        async with http.stream(method, url, headers=headers) as response:
            return response.status_code
    if url.endswith("/auth/token"):
        return (await http.post(url, data={"username": "nobody", "password": "wrong-password"})).status_code
    return (await http.request(method, url, headers=headers, json=body if body is not None else {})).status_code


async def test_every_route_for_every_role(database_url, mqtt_broker, agency):
    async with two_agencies(database_url, mqtt_broker, agency) as (backend, http, settings, a, b):
        # ownership (before the matrix retires the device): an officer may read only their own record, a gateway only its own list
        officer = {"Authorization": f"Bearer {a.tokens['officer']}"}
        assert (await http.get(f"/api/v1/officers/{a.other_officer_id}", headers=officer)).status_code == 403
        assert [o["id"] for o in (await http.get("/api/v1/officers", headers=officer)).json()] == [a.officer_id]
        gateway = {"Authorization": f"Bearer {a.tokens['gateway']}"}
        assert (await http.get(f"/api/v1/gateways/{a.gateway.gateway_id}/devices", headers=gateway)).json()["devices"] == [{"device_id": a.device_id}]
        assert (await http.get(f"/api/v1/gateways/{b.gateway.gateway_id}/devices", headers=gateway)).status_code == 403
        # the pages' words come from their one definition
        words = (await http.get("/api/v1/meta/labels", headers=officer)).json()
        assert words == {"outcomes": OUTCOME_LABELS, "states": STATE_LABELS,
                         "priorities": {str(p): text for p, text in PRIORITY_LABELS.items()},
                         "battery_low_pct": settings.battery_low_pct,
                         "map": {"tile_url": None, "attribution": "", "max_zoom": 19}}  # no tile server by default

        routes = iter_routes(backend.app)
        assert set(routes) == set(ACCESS), "every route is in the access table, and nothing else is"
        checked = 0
        # logout revokes: last but one; retiring the gateway ends its token: last, the fleet admin last of all
        retires_gateway = lambda p: p.endswith("/gateways/{gateway_id}/retire")  # noqa: E731
        for method, path in sorted(routes, key=lambda r: (retires_gateway(r[1]), r[1].endswith("/logout"))):
            if method == "WEBSOCKET":
                continue
            rule = ACCESS[(method, path)]
            for role in sorted(ROLES, key=lambda r: retires_gateway(path) and r == "fleet_admin"):
                token = None if role == "anonymous" else a.tokens[role]
                if path.endswith("/logout") and token and role != "gateway":
                    token = await login(http, f"{a.name}-{role}")  # a throwaway token
                status = await _status(http, method, _fill(path, a), token, BODIES.get((method, path)))
                where = f"{method} {path} as {role}: {status}"
                if "anonymous" in rule.roles:
                    assert status not in (403, 500) and (status != 401 or path.endswith("/auth/token")), where
                elif role == "anonymous":
                    assert status == 401, where
                elif role in rule.roles and rule.purpose_checked:  # the privacy policy may still refuse
                    assert status < 500 and status != 401, where
                elif role in rule.roles:
                    assert status < 500 and status not in (401, 403), where
                else:
                    assert status == 403, where
                checked += 1
        assert checked == 6 * (len(ACCESS) - 1)

        # the WebSocket goes by the same table, and opens with a one-time ticket, never a token in its URL
        ws_base = backend.url.replace("http", "ws") + "/api/v1/ws"
        for role in ("officer", "fleet_admin", "auditor", "gateway"):
            r = await http.post("/api/v1/live/ticket", headers={"Authorization": f"Bearer {a.tokens[role]}"})
            assert r.status_code == (401 if role == "gateway" else 403), (role, r.status_code)  # the matrix retired the gateway
        for query in ("?token=" + a.tokens["supervisor"], "?ticket=forged", ""):
            async with websockets.connect(ws_base + query) as ws:
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    await ws.recv()
                assert closed.value.rcvd.code == 4401, query
        async with websockets.connect(await live_url(backend.url, a.tokens["supervisor"])):
            pass


async def test_supervisor_of_one_agency_sees_nothing_of_another(database_url, mqtt_broker, agency):
    async with two_agencies(database_url, mqtt_broker, agency) as (backend, http, settings, a, b):
        rt = backend.runtime
        sup_b = {"Authorization": f"Bearer {b.tokens['supervisor']}"}
        async with websockets.connect(await live_url(backend.url, b.tokens["supervisor"])) as ws:
            alert_a = await rt.alerts.raise_alert(agency_id=a.name, device_id=a.device_id, seq=1, kind="sos", officer_id=a.officer_id,
                                                  officer_name="A", explanation={"detector": "test"})
            alert_b = await rt.alerts.raise_alert(agency_id=b.name, device_id=b.device_id, seq=1, kind="sos", officer_id=b.officer_id,
                                                  officer_name="B", explanation={"detector": "test"})
            first = json.loads(await asyncio.wait_for(ws.recv(), 10))
            while first["type"] in ("hello", "heartbeat"):
                first = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert first["data"]["id"] == str(alert_b.id)  # A's alert, raised first, never came
        async with http.stream("GET", "/api/v1/events", headers={**sup_b, "Last-Event-ID": "0"}) as stream:
            lines = stream.aiter_lines()
            seen = []
            while not any(str(alert_b.id) in s for s in seen):
                seen.append(await asyncio.wait_for(anext(lines), 10))
            assert not any(str(alert_a.id) in s for s in seen)
        await asyncio.wait_for(_stored(rt), 10)

        listed = (await http.get("/api/v1/alerts", headers=sup_b)).json()
        assert [x["id"] for x in listed] == [str(alert_b.id)]
        assert (await http.get(f"/api/v1/alerts/{alert_a.id}", headers=sup_b)).status_code == 404
        assert (await http.post(f"/api/v1/alerts/{alert_a.id}/acknowledge", headers=sup_b)).status_code == 404
        assert {o["id"] for o in (await http.get("/api/v1/officers", headers=sup_b)).json()} == {b.officer_id, b.other_officer_id}
        assert (await http.get(f"/api/v1/officers/{a.officer_id}", headers=sup_b)).status_code == 404
        assert [d["device_id"] for d in (await http.get("/api/v1/devices", headers=sup_b)).json()] == [b.device_id]
        assert (await http.get(f"/api/v1/devices/{a.device_id}", headers=sup_b)).status_code == 404
        assert [o["officer_id"] for o in (await http.get("/api/v1/live/officers", headers=sup_b)).json()] == [b.officer_id]
        admin_b = {"Authorization": f"Bearer {b.tokens['fleet_admin']}"}
        assert (await http.put(f"/api/v1/devices/{a.device_id}/assignment", headers=admin_b, json={"officer_id": b.officer_id})).status_code == 404
        assert (await http.post(f"/api/v1/devices/{a.device_id}/retire", headers=admin_b)).status_code == 404
        assert [g["gateway_id"] for g in (await http.get("/api/v1/gateways", headers=admin_b)).json()] == [b.gateway.gateway_id]


async def _stored(rt):
    while rt.alerts.pending:
        await asyncio.sleep(0.02)


async def test_tokens_expire_and_can_be_revoked(database_url, mqtt_broker, agency):
    async with two_agencies(database_url, mqtt_broker, agency) as (backend, http, settings, a, b):
        token = await login(http, f"{a.name}-supervisor")
        me = await http.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
        assert me.json() == {"subject": f"{a.name}-supervisor", "role": "supervisor", "agency": a.name, "officer_id": None}
        assert (await http.post("/api/v1/auth/token", data={"username": f"{a.name}-supervisor", "password": "wrong-password"})).status_code == 401
        assert (await http.post("/api/v1/auth/logout", headers={"Authorization": f"Bearer {token}"})).status_code == 204
        assert (await http.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})).status_code == 401
        # revocation is stored: a backend that reloads the list refuses it too
        backend.runtime.revoked._ids.clear()
        await backend.runtime.revoked.refresh()
        assert (await http.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})).status_code == 401
        # other tokens of the same person still work; an expired one does not
        assert (await http.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {a.tokens['supervisor']}"})).status_code == 200
        claims = jwt.decode(a.tokens["supervisor"], options={"verify_signature": False})
        expired = issue_token(settings.token_key.get_secret_value(), {**claims, "jti": "expired-1"}, -1)
        r = await http.get("/api/v1/alerts", headers={"Authorization": f"Bearer {expired}"})
        assert r.status_code == 401 and "expired" in r.json()["detail"]
