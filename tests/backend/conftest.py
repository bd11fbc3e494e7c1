from __future__ import annotations

import uuid

from backend.local import infra
from backend.app.config import BackendSettings
from backend.identity.security import issue_token


def backend_settings(database_url: str, mqtt_host: str, mqtt_port: int, agency: str, **overrides) -> BackendSettings:
    return BackendSettings(
        database_url=database_url, mqtt_url=f"mqtt://{mqtt_host}:{mqtt_port}",
        mqtt_client_id="vigil-backend-" + uuid.uuid4().hex[:8], agencies=[agency],
        http_port=infra.free_port(), db_retry_interval_s=0.2, registry_refresh_s=0.5, **overrides,
    )


def supervisor_token(settings: BackendSettings, agency: str) -> str:
    return issue_token(settings.secret_key.get_secret_value(), {"sub": "sup-1", "role": "supervisor", "agency": agency}, 3600)


