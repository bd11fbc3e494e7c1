from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, Field

from backend.identity import auth, fleet
from backend.api.access import API
from backend.api.deps import CallerDep, RuntimeDep
from backend.db import schema as t
from backend.exceptions import NotFound
from backend.privacy.access import refuse_not_found
from gateway.topics import TopicError

router = APIRouter(prefix=f"{API}/gateways", tags=["gateways"])


class GatewayIn(BaseModel):
    gateway_id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    devices: list[int] = Field(default_factory=list, description="device ids this gateway may serve")


class ServedIn(BaseModel):
    devices: list[int]


@router.post("", summary="Register a gateway. Its API token and MQTT password are shown ONCE; the broker admits it "
                         "at once (`broker`: admitted, or why not yet: the backend keeps retrying)", status_code=201,
             responses={404: {"description": "a device named is not the agency's"},
                        409: {"description": "a gateway with this id is registered"}})
async def register(runtime: RuntimeDep, caller: CallerDep, body: GatewayIn) -> dict:
    await _agency_devices(runtime, caller.agency_id, body.devices)
    try:
        creds = await fleet.register_gateway(runtime.engine, runtime.settings.secret_key.get_secret_value(),
                                             caller.agency_id, body.gateway_id, body.devices)
    except TopicError as exc:
        raise HTTPException(422, [{"loc": ["body"], "msg": str(exc), "type": "value_error"}]) from exc  # the documented 422 shape
    return {"gateway_id": creds.gateway_id, "agency": creds.agency_id, "api_token": creds.api_token,
            "mqtt_username": creds.mqtt_username, "mqtt_password": creds.mqtt_password,
            "broker": await _tell_broker(runtime), "note": "the token and the MQTT password are shown once"}


async def _agency_devices(runtime, agency_id: str, devices: list[int]) -> None:
    """NotFound naming (as the pages do) the given devices that are not the agency's."""
    if not devices:
        return
    async with runtime.engine.connect() as conn:
        found = set((await conn.execute(sa.select(t.devices.c.id).where(
            t.devices.c.id.in_(devices), t.devices.c.agency_id == agency_id))).scalars())
    missing = sorted(set(devices) - found)
    if missing:
        raise NotFound(f"no device {', '.join(fleet.device_label(d) for d in missing)} in agency {agency_id}")


async def _tell_broker(runtime) -> str:
    """'admitted as registered' when the broker now holds the registry; otherwise why not."""
    if runtime.broker_admin is None:
        return ("not administered by this backend (VIGIL_BROKER_ADMIN_USERNAME unset): the broker's operator must "
                "apply the change")
    failed = await runtime.broker_admin.converge_soon()
    return "applied" if failed is None else f"pending: {failed}; retrying every {runtime.broker_admin.retry_s:g} s"


@router.get("", summary="Gateways of the caller's agency: the devices each may serve, when it last carried a frame and "
                        "whose, what it last said of itself (state online/offline, queue_depth: frames waiting in its "
                        "queue, state_at); gateways heard but not registered too (registered: false)")
async def list_gateways(runtime: RuntimeDep, caller: CallerDep) -> list[dict]:
    query = (
        sa.select(t.gateways.c.id, t.gateways.c.created_at, t.gateways.c.retired_at, t.gateway_mqtt.c.mqtt_username,
                  sa.func.array_remove(sa.func.array_agg(t.gateway_devices.c.device_id), None).label("devices"))
        .select_from(t.gateways.outerjoin(t.gateway_mqtt, t.gateway_mqtt.c.gateway_id == t.gateways.c.id)
                     .outerjoin(t.gateway_devices, t.gateway_devices.c.gateway_id == t.gateways.c.id))
        .where(t.gateways.c.agency_id == caller.agency_id)
        .group_by(t.gateways.c.id, t.gateway_mqtt.c.mqtt_username)
        .order_by(t.gateways.c.id)
    )
    async with runtime.engine.connect() as conn:
        rows = [{**dict(r), "gateway_id": r["id"], "devices": sorted(r["devices"] or []), "registered": True}
                for r in (await conn.execute(query)).mappings()]
    heard = _heard(runtime, caller.agency_id)
    for row in rows:
        row.update(heard.pop(row["gateway_id"], {"last_seen": None, "devices_heard": []}))
    # a gateway carrying the agency's frames that nobody registered (the demo's, one set up by hand):
    # shown, so the list never says "none" while frames flow
    rows += [{"gateway_id": gw, "id": gw, "created_at": None, "retired_at": None, "mqtt_username": None, "devices": [],
              "registered": False, **seen} for gw, seen in sorted(heard.items())]
    for row in rows:  # what the gateway itself last said: online or offline, and the frames in its queue
        said = runtime.gateway_states.get(caller.agency_id, row["gateway_id"])
        row.update({"state": said.state if said else None, "queue_depth": said.queue_depth if said else None,
                    "state_at": dt.datetime.fromtimestamp(said.at, dt.timezone.utc).isoformat() if said else None})
    return rows


def _heard(runtime, agency_id: str) -> dict[str, dict]:
    """Per gateway: when it last carried a frame of this agency's devices and which devices, since
    the backend started (the status board sees every verified frame)."""
    out: dict[str, dict] = {}
    for st in list(runtime.status.devices.values()):
        if st.agency_id != agency_id or st.gateway is None or st.last_seen is None:
            continue
        entry = out.setdefault(st.gateway, {"last_seen": st.last_seen, "devices_heard": []})
        entry["last_seen"] = max(entry["last_seen"], st.last_seen)
        entry["devices_heard"].append(st.device_id)
    for entry in out.values():
        entry["last_seen"] = dt.datetime.fromtimestamp(entry["last_seen"], dt.timezone.utc).isoformat()
        entry["devices_heard"].sort()
    return out


@router.get("/{gateway_id}/devices", summary="The devices this gateway may serve (the gateway's own provisioning list)")
async def served_devices(request: Request, runtime: RuntimeDep, caller: CallerDep, gateway_id: str) -> dict:
    query = (
        sa.select(t.gateway_devices.c.device_id)
        .join(t.gateways, t.gateways.c.id == t.gateway_devices.c.gateway_id)
        .join(t.devices, t.devices.c.id == t.gateway_devices.c.device_id)
        .where(t.gateway_devices.c.gateway_id == gateway_id, t.gateways.c.agency_id == caller.agency_id,
               t.devices.c.status == "active")
        .order_by(t.gateway_devices.c.device_id)
    )
    async with runtime.engine.connect() as conn:
        exists = (await conn.execute(sa.select(t.gateways.c.id).where(
            t.gateways.c.id == gateway_id, t.gateways.c.agency_id == caller.agency_id))).first()
        if exists is None:
            elsewhere = (await conn.execute(sa.select(t.gateways.c.agency_id).where(t.gateways.c.id == gateway_id))).scalar_one_or_none()
        else:
            return {"gateway_id": gateway_id, "devices": [{"device_id": d} for d in (await conn.execute(query)).scalars()]}
    raise await refuse_not_found(request, caller, "gateway", gateway_id, elsewhere)


@router.put("/{gateway_id}/devices", summary="Set the devices this gateway may serve")
async def set_served(request: Request, runtime: RuntimeDep, caller: CallerDep, gateway_id: str, body: ServedIn) -> dict:
    try:
        await _agency_devices(runtime, caller.agency_id, body.devices)
        await auth.set_gateway_devices(runtime.engine, caller.agency_id, gateway_id, body.devices)
    except NotFound as exc:  # the gateway, or a device, is not the agency's: a refusal, audited
        async with runtime.engine.connect() as conn:
            elsewhere = (await conn.execute(sa.select(t.gateways.c.agency_id).where(t.gateways.c.id == gateway_id))).scalar_one_or_none()
        refusal = await refuse_not_found(request, caller, "gateway", gateway_id, elsewhere)
        raise NotFound(str(exc)) from refusal
    return {"gateway_id": gateway_id, "devices": [{"device_id": d} for d in sorted(set(body.devices))]}


@router.post("/{gateway_id}/retire", summary="Retire a gateway: its token stops working and the broker refuses (and "
                                             "disconnects) it at once (`broker` says whether it did)",
             responses={409: {"description": "the gateway was already retired"}})
async def retire(request: Request, runtime: RuntimeDep, caller: CallerDep, gateway_id: str) -> dict:
    try:
        retired_at = await fleet.retire_gateway(runtime.engine, caller.agency_id, gateway_id)
    except NotFound as exc:
        async with runtime.engine.connect() as conn:
            elsewhere = (await conn.execute(sa.select(t.gateways.c.agency_id).where(t.gateways.c.id == gateway_id))).scalar_one_or_none()
        raise await refuse_not_found(request, caller, "gateway", gateway_id, elsewhere) from exc
    await runtime.registry.refresh()
    return {"gateway_id": gateway_id, "retired_at": retired_at, "broker": await _tell_broker(runtime)}
