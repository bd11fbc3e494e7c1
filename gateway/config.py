"""The gateway's configuration: one pydantic-settings class, read from ``VIGIL_GATEWAY_*``
environment variables and optionally a dotenv-style file (environment wins over the file)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from gateway import topics
from gateway.exceptions import ConfigError


def parse_device_id(text: str) -> int:
    """A device id as a person types it: decimal (13828097) or hex with 0x (0x00D30001), 32 bits.
    Raises ValueError saying how to write one."""
    try:
        value = int(str(text).strip(), 0)
    except ValueError:
        raise ValueError(f"{text!r} is not a device id: type it in decimal (13828097) or in hex with 0x (0x00D30001)") from None
    if not 0 <= value <= 0xFFFFFFFF:
        raise ValueError(f"{text!r} is not a device id: it must fit in 32 bits (0 to 0xFFFFFFFF)")
    return value


class GatewaySettings(BaseSettings):
    """Everything one gateway needs. See gateway/README.md for each variable."""

    model_config = SettingsConfigDict(env_prefix="VIGIL_GATEWAY_", extra="ignore")

    agency: str = Field(description="tenant: first segment of every MQTT topic")
    gateway_id: str = Field(description="this gateway's id, unique within the agency")
    mqtt_url: str = "mqtt://127.0.0.1:1883"
    mqtt_username: str | None = None
    mqtt_password: SecretStr | None = None
    mqtt_keepalive_s: int = 15
    mqtt_ca_file: Path | None = None  # mqtts://: CA that signed the broker's certificate; None: the system's
    backend_url: str | None = None  # provisioned device list; None: use ``devices``
    backend_token: SecretStr | None = None
    devices: Annotated[list[int], NoDecode] = Field(default_factory=list)
    device_refresh_s: float = 60.0
    queue_path: Path = Path(".vigil/gateway/queue.sqlite3")
    queue_max_frames: int = Field(default=500_000, ge=100)
    metrics_port: int | None = None  # None: no endpoint; 0: any free port
    metrics_host: str = "127.0.0.1"
    latitude: float | None = Field(default=None, ge=-90, le=90)
    longitude: float | None = Field(default=None, ge=-180, le=180)
    adapter: str | None = None  # BlueZ adapter such as hci0; None: the first powered one
    link_quality_interval_s: float = 10.0
    downlink_ttl_s: float = 30.0  # a command waits this long for its device to be reachable

    @field_validator("agency", "gateway_id")
    @classmethod
    def _topic_segment(cls, value: str) -> str:
        try:
            topics.gateway_state(value, "x")
        except topics.TopicError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("devices", mode="before")
    @classmethod
    def _device_list(cls, value):
        # Accept JSON ("[1, 2]") or a comma-separated list ("1,2,0x1F") from the environment.
        if isinstance(value, str):
            text = value.strip()
            if not text:
                return []
            if text.startswith("["):
                return json.loads(text)
            return [parse_device_id(part) for part in filter(None, (p.strip() for p in text.split(",")))]
        return value

    @field_validator("mqtt_url")
    @classmethod
    def _mqtt_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("mqtt", "mqtts"):
            raise ValueError("mqtt_url must be mqtt://host:port or mqtts://host:port (TLS)")
        if not parts.hostname:
            raise ValueError("mqtt_url needs a host")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "GatewaySettings":
        if (self.latitude is None) != (self.longitude is None):
            raise ValueError("set both latitude and longitude, or neither")
        if self.backend_url and not self.backend_token:
            raise ValueError("backend_url needs backend_token (the gateway's bearer token)")
        return self

    @property
    def mqtt_host(self) -> str:
        return urlsplit(self.mqtt_url).hostname or "127.0.0.1"

    @property
    def mqtt_tls(self) -> bool:
        return urlsplit(self.mqtt_url).scheme == "mqtts"

    @property
    def mqtt_port(self) -> int:
        return urlsplit(self.mqtt_url).port or (8883 if self.mqtt_tls else 1883)

    @property
    def location(self) -> tuple[float, float] | None:
        if self.latitude is None or self.longitude is None:
            return None
        return self.latitude, self.longitude

    @classmethod
    def load(cls, config_file: Path | None = None, **overrides) -> "GatewaySettings":
        """Read the environment (and ``config_file``, a dotenv file of VIGIL_GATEWAY_* lines);
        raise ConfigError with every problem listed."""
        try:
            if config_file is not None:
                if not Path(config_file).is_file():
                    raise ConfigError(f"config file {config_file} does not exist")
                return cls(_env_file=config_file, **overrides)
            return cls(**overrides)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors())
            raise ConfigError(f"invalid gateway configuration: {problems}") from exc
