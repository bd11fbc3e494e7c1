"""The device registry: one device whose key does not unwrap (wrapped under another secret) is
skipped and logged, never keeps the other devices out (it failed the whole refresh)."""
from __future__ import annotations

import logging

import pytest
import sqlalchemy as sa

from backend.db import engine as db
from backend.db import schema as t
from backend.identity import fleet
from backend.identity.security import new_device_key, wrap_device_key
from backend.ingest.registry import DeviceRegistry
from tests.backend.conftest import backend_settings

pytestmark = pytest.mark.integration


async def test_a_device_whose_key_does_not_unwrap_is_skipped_not_fatal(database_url, mqtt_broker, agency, caplog):
    settings = backend_settings(database_url, *mqtt_broker, agency)
    db.upgrade(settings)
    engine = db.create_engine(settings)
    secret = settings.secret_key.get_secret_value()
    try:
        await fleet.ensure_agency(engine, agency)
        await fleet.provision_device(engine, secret, agency, 0x00D00001)
        await fleet.provision_device(engine, secret, agency, 0x00D00002)
        async with engine.begin() as conn:  # as if provisioned under an older secret
            await conn.execute(sa.update(t.devices).where(t.devices.c.id == 0x00D00002).values(
                key_wrapped=wrap_device_key("another-secret-" + "x" * 40, 0x00D00002, new_device_key())))
        registry = DeviceRegistry(engine, secret)
        with caplog.at_level(logging.ERROR, logger="vigil.registry"):
            await registry.refresh()
            await registry.refresh()
        assert registry.loaded and registry.get(0x00D00001) is not None
        assert registry.get(0x00D00002) is None and registry.unreadable == {0x00D00002}
        assert len([r for r in caplog.records if "does not unwrap" in r.getMessage()]) == 1  # once, not every refresh
    finally:
        await engine.dispose()
