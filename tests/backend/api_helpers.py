"""Shared set-up of the API tests: a migrated database with two agencies, people of every role,
an officer on shift with a device, a registered gateway, and the backend serving them."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import httpx

from backend.identity import auth, fleet
from backend.db import engine as db
from backend.app.server import serve
from tests.backend.conftest import backend_settings

PASSWORD = "correct horse battery"


@dataclass
class Agency:
    name: str
    officer_id: int = 0
    other_officer_id: int = 0
    device_id: int = 0
    device_key: bytes = b""
    gateway: auth.GatewayCredentials | None = None
    tokens: dict[str, str] = field(default_factory=dict)


async def seed(settings, name: str, device_id: int) -> Agency:
    engine = db.create_engine(settings)
    a = Agency(name)
    try:
        await fleet.ensure_agency(engine, name)
        a.officer_id = await fleet.create_officer(engine, name, "B-1", f"Officer One of {name}", "Unit 1")
        a.other_officer_id = await fleet.create_officer(engine, name, "B-2", f"Officer Two of {name}", "Unit 1")
        device = await fleet.provision_device(engine, settings.secret_key.get_secret_value(), name, device_id)
        a.device_id, a.device_key = device_id, device.key
        await fleet.assign_device(engine, device_id, a.officer_id)
        for role in ("supervisor", "fleet_admin", "auditor", "officer"):
            await auth.create_user(engine, f"{name}-{role}", PASSWORD, role, name, a.officer_id if role == "officer" else None)
        a.gateway = await auth.register_gateway(engine, name, f"{name}-gw", [device_id])
    finally:
        await engine.dispose()
    return a


async def login(http: httpx.AsyncClient, username: str, password: str = PASSWORD) -> str:
    response = await http.post("/api/v1/auth/token", data={"username": username, "password": password})
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


@contextlib.asynccontextmanager
async def two_agencies(database_url, mqtt_broker, name_a: str, **overrides):
    name_b = name_a + "b"
    settings = backend_settings(database_url, *mqtt_broker, name_a, **overrides)
    settings = settings.model_copy(update={"agencies": [name_a, name_b]})
    db.upgrade(settings)
    a = await seed(settings, name_a, 0x0A000001)
    b = await seed(settings, name_b, 0x0B000001)
    async with serve(settings) as backend:
        async with httpx.AsyncClient(base_url=backend.url, timeout=30) as http:
            for agency in (a, b):
                for role in ("supervisor", "fleet_admin", "auditor", "officer"):
                    agency.tokens[role] = await login(http, f"{agency.name}-{role}")
                agency.tokens["gateway"] = agency.gateway.api_token
            yield backend, http, settings, a, b
