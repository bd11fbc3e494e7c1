"""Backend configuration: the one settings class of this deployable (environment: VIGIL_*)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from backend.exceptions import ConfigurationError

# Accepted only when environment == "development"; production refuses to start with it.
DEVELOPMENT_SECRET = "vigil-development-secret-do-not-use-in-production"


class BackendSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VIGIL_", env_file=".env", extra="ignore")

    environment: Literal["development", "production"] = "development"
    database_url: str = Field(
        "postgresql+asyncpg://postgres@127.0.0.1:5432/vigil",
        description="SQLAlchemy async URL of the PostgreSQL (TimescaleDB when available) database",
    )
    mqtt_url: str = Field("mqtt://127.0.0.1:1883", description="broker, mqtt://[user:pass@]host:port")
    mqtt_client_id: str = Field("vigil-backend", description="fixed id: the broker keeps our QoS 1 session")
    agencies: list[str] = Field(["+"], description="agencies this backend serves; '+' means all")
    secret_key: SecretStr = Field(SecretStr(DEVELOPMENT_SECRET), description="signs tokens, wraps device keys")
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    db_retry_interval_s: float = Field(2.0, gt=0, description="how often to retry writes while the database is down")
    registry_refresh_s: float = Field(10.0, gt=0, description="how often to reload devices and assignments")
    token_ttl_s: int = Field(8 * 3600, gt=0, description="lifetime of a person's access token")

    @model_validator(mode="after")
    def _no_default_secret_in_production(self) -> "BackendSettings":
        if self.environment != "development" and self.secret_key.get_secret_value() == DEVELOPMENT_SECRET:
            raise ConfigurationError("VIGIL_SECRET_KEY must be set outside development mode")
        if len(self.secret_key.get_secret_value()) < 32:
            raise ConfigurationError("VIGIL_SECRET_KEY must be at least 32 characters")
        return self

    @property
    def sync_database_url(self) -> str:
        """The same database for synchronous tools (Alembic): psycopg2 driver."""
        return self.database_url.replace("+asyncpg", "+psycopg2")
