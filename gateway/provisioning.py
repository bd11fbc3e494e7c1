"""Which wearables this gateway serves: the backend's provisioned list, refreshed periodically,
or a static list from the settings when no backend is configured. The last good list is kept in
the durable queue's database, so a gateway that restarts while the backend is away still knows
its devices."""
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import httpx

from gateway.config import GatewaySettings
from gateway.exceptions import ProvisioningError
from gateway.store import FrameQueue

log = logging.getLogger("vigil.gateway.provisioning")

# A failed fetch is retried sooner than the normal refresh, but not hammered.
RETRY_S = 5.0
HTTP_TIMEOUT_S = 10.0
_META_KEY = "provisioned_devices"


def parse_device_list(body: object) -> set[int]:
    """``{"devices": [{"device_id": 123}, ...]}`` -> {123, ...}; ProvisioningError otherwise."""
    try:
        devices = body["devices"]  # type: ignore[index]
        ids = {int(d["device_id"]) for d in devices}
    except (KeyError, TypeError, ValueError) as exc:
        raise ProvisioningError(f"unexpected device list from the backend: {exc!r}") from exc
    if any(not 0 <= i <= 0xFFFFFFFF for i in ids):
        raise ProvisioningError("device id out of range in the backend's list")
    return ids


class ProvisionedDevices:
    def __init__(self, settings: GatewaySettings, store: FrameQueue,
                 on_change: Callable[[set[int]], None],
                 transport: httpx.AsyncBaseTransport | None = None):
        self.settings = settings
        self._store = store
        self._on_change = on_change
        self._transport = transport
        self.ids: set[int] = set(settings.devices)
        if settings.backend_url:
            cached = store.get_meta(_META_KEY)
            self.ids = set(cached or [])

    def __contains__(self, device_id: int) -> bool:
        return device_id in self.ids

    async def fetch(self) -> set[int]:
        s = self.settings
        url = f"{s.backend_url.rstrip('/')}/api/v1/gateways/{s.gateway_id}/devices"
        headers = {"Authorization": f"Bearer {s.backend_token.get_secret_value()}"}
        try:
            async with httpx.AsyncClient(timeout=HTTP_TIMEOUT_S, transport=self._transport) as client:
                response = await client.get(url, headers=headers)
                response.raise_for_status()
                return parse_device_list(response.json())
        except (httpx.HTTPError, ValueError) as exc:
            raise ProvisioningError(f"cannot fetch provisioned devices from {url}: {exc}") from exc

    def _apply(self, ids: set[int]) -> None:
        if ids == self.ids:
            return
        added, removed = ids - self.ids, self.ids - ids
        log.info("provisioned devices: %d (+%d, -%d)", len(ids), len(added), len(removed))
        self.ids = ids
        self._store.set_meta(_META_KEY, sorted(ids))
        self._on_change(ids)

    async def run(self, stop: asyncio.Event) -> None:
        self._on_change(self.ids)
        if not self.settings.backend_url:
            return
        failing = False
        while not stop.is_set():
            try:
                self._apply(await self.fetch())
                if failing:
                    log.info("provisioned device list reachable again")
                failing = False
                wait = self.settings.device_refresh_s
            except ProvisioningError as exc:
                if not failing:
                    log.warning("%s; keeping the last list (%d devices)", exc, len(self.ids))
                failing = True
                wait = min(RETRY_S, self.settings.device_refresh_s)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait)
