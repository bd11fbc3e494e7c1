"""Backend configuration: the one settings class of this deployable (environment: VIGIL_*)."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from backend.exceptions import ConfigurationError
from backend.privacy.loader import RAW_CEILING_HOURS, SHIPPED_POLICY

# The secret earlier versions defaulted to. It is published, so it is refused everywhere.
DEVELOPMENT_SECRET = "vigil-development-secret-do-not-use-in-production"
# Keys shorter than this are refused (HS256 and the key-wrapping derivation want 256 bits).
MIN_KEY_CHARS = 32


class BackendSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VIGIL_", env_file=".env", extra="ignore")

    environment: Literal["development", "production"] = Field(
        "development", description="production refuses to start without configured keys")
    database_url: str = Field(
        "postgresql+asyncpg://postgres@127.0.0.1:5432/vigil",
        description="SQLAlchemy async URL of the PostgreSQL (TimescaleDB when available) database",
    )
    mqtt_url: str = Field("mqtt://127.0.0.1:1883", description="broker, mqtt://[user:pass@]host:port")
    mqtt_client_id: str = Field("vigil-backend", description="fixed id: the broker keeps our QoS 1 session")
    agencies: list[str] = Field(["+"], description="agencies this backend serves; '+' means all")
    http_host: str = Field("127.0.0.1", description="address the API and dashboard listen on")
    http_port: int = Field(8000, description="port the API and dashboard listen on")
    # the supervisor's map (backend/dashboard/static/map.js); no URL: no tile server, a grid with a scale
    map_tile_url: str | None = Field(None, description=(
        "raster tiles for the supervisor's map, e.g. https://tile.openstreetmap.org/{z}/{x}/{y}.png ({s} for "
        "subdomains); unset: no tile server, the map draws a grid with a scale in the page (works offline)"))
    map_tile_attribution: str = Field("", max_length=300, description=(
        "shown in the map's corner with map_tile_url (plain text; most tile providers' terms require it, e.g. "
        "'© OpenStreetMap contributors')"))
    map_tile_max_zoom: int = Field(19, ge=1, le=22, description="the deepest zoom level map_tile_url serves")

    @field_validator("map_tile_url")
    @classmethod
    def _tile_template(cls, url: str | None) -> str | None:
        if not url:
            return None
        if not url.startswith(("https://", "http://")) or any(c.isspace() for c in url):
            raise ValueError(f"VIGIL_MAP_TILE_URL must be an http(s) URL template, got {url!r}")
        missing = [p for p in ("{z}", "{x}", "{y}") if p not in url]
        if missing:
            raise ValueError(f"VIGIL_MAP_TILE_URL must contain {', '.join(missing)} (e.g. "
                             "https://tile.openstreetmap.org/{z}/{x}/{y}.png), got " + repr(url))
        return url

    db_retry_interval_s: float = Field(2.0, gt=0, description="how often to retry writes while the database is down")
    journal_dir: Path = Field(Path(".vigil/journal"), description=(
        "local directory (owner-only) of the fsynced journal: an event's alert is written here before its frame is "
        "acknowledged, and stored from here at start-up after a crash; one file per mqtt_client_id"))
    replay_save_interval_s: float = Field(2.0, gt=0, description=(
        "how often each device's replay window (of frames acknowledged to the broker) is saved, so a restart "
        "refuses old frames; a crash forgets at most this much"))
    journal_segment_s: float = Field(2.0, gt=0, description="the telemetry journal starts a new segment file this often")
    journal_hold_s: float | None = Field(None, gt=0, description=(
        "a telemetry journal segment is deleted once the raw-window writer emptied its buffer this long after the "
        "segment closed; None: detection_backlog_s + 4 hops + 10 s"))
    alert_write_wait_s: float = Field(2.0, gt=0, description=(
        "how long a supervisor's acknowledge or resolve waits for PostgreSQL before answering (journaled either way)"))
    registry_refresh_s: float = Field(10.0, gt=0, description="how often to reload devices and assignments")
    token_ttl_s: int = Field(8 * 3600, gt=0, description="lifetime of a person's access token")
    # ingest and detection (backend/detection)
    detection_window_s: float = Field(8.0, gt=0, description="length of the analysis window of each device")
    detection_hop_s: float = Field(2.0, gt=0, description="windows are analysed every hop of device time")
    detection_fall_step_s: float = Field(
        0.5, gt=0, description="falls are decided every this much device time (at most the hop; the other models run every hop)")
    detection_tick_s: float = Field(0.0, ge=0, description="how often due windows are collected; 0 = every fall step")
    detection_worker: Literal["inline", "thread", "process"] = Field(
        "inline", description="where the models run: on the event loop in chunks of at most 200 windows (no GIL "
                              "hand-offs; fastest measured), in a thread, or in a process of their own")
    detection_reorder_frames: int = Field(3, ge=0, description="telemetry frames held to restore order")
    detection_reorder_wait_s: float = Field(1.0, ge=0, description="longest wait for a missing frame")
    detection_gap_fill_s: float = Field(1.0, ge=0, description="gaps up to this are filled; longer ones restart the window")
    detection_backlog_s: float = Field(60.0, gt=0, description="device time a stream may run ahead of the analysis")
    live_alert_max_age_s: float = Field(60.0, gt=0, description="model alerts from older windows (backfill) are not paged")
    feature_interval_s: float = Field(1.0, gt=0, description="one features row per device per interval")
    feature_batch_size: int = Field(2000, gt=0, description="rows per COPY into features and raw_windows")
    feature_flush_s: float = Field(1.0, gt=0, description="how often buffered rows are written")
    feature_buffer_max: int = Field(500_000, gt=0, description="features rows kept in memory while the database is away")
    raw_buffer_max: int = Field(50_000, gt=0, description="raw-window rows kept in memory while the database is away")
    raw_hold_minutes: float = Field(5.0, ge=0, description="raw waveforms kept this long before and after an alert")
    device_offline_s: float = Field(30.0, gt=0, description="no frame for this long: the device is offline")
    battery_low_pct: int = Field(15, ge=0, le=100, description="battery level at which an officer's status is 'check'")
    status_flush_s: float = Field(5.0, gt=0, description="how often device status is written")
    # alert lifecycle (backend/incidents/alerts.py)
    escalate_after_s: float = Field(30.0, gt=0, description="an unacknowledged incident is escalated after this long")
    cancel_grace_s: float = Field(60.0, gt=0, description="how long after a fall the officer's cancel still ends it")
    cad_webhook_url: str | None = Field(None, description="computer-aided dispatch: escalated incidents are POSTed here")
    cad_retry_base_s: float = Field(0.5, gt=0, description="first retry delay of the dispatch webhook (doubles, capped)")
    nearby_radius_m: float = Field(2000.0, ge=0, le=100_000, description=(
        "when an officer's SOS or man-down alarm raises an incident, officers on shift whose device was last heard "
        "through a gateway within this distance of them feel 'colleague needs help' on their wearables; 0 turns it off"))
    # the broker's dynamic security plugin (backend/identity/broker.py): registering or retiring a gateway
    # takes effect in the broker at once, and the broker is reconciled with the registry at start-up
    broker_admin_username: str | None = Field(
        None, description="the plugin's admin client (its role may use $CONTROL/dynamic-security/#); unset: the backend "
                          "does not administer the broker, and gateways are admitted only by `vigil broker init`'s file")
    broker_admin_password: SecretStr | None = Field(None, description="password of broker_admin_username")
    broker_admin_retry_s: float = Field(5.0, gt=0, description="how often to retry while the broker's control topic cannot be reached")
    broker_admin_resync_s: float = Field(300.0, gt=0, description="how often the broker is checked against the gateway registry")
    broker_admin_timeout_s: float = Field(5.0, gt=0, description="how long one exchange on the control topic may take")
    # the fleet's firmware (GET /api/v1/devices/firmware)
    firmware_current: str | None = Field(None, pattern=r"^\d{1,3}\.\d{1,3}\.\d{1,3}$", description=(
        "the current firmware release (as devices report it, e.g. 1.4.0); devices on an older one are listed as "
        "outdated. Unset: the newest version any device of the agency reports"))
    # hardening: TLS and sign-in throttling
    mqtt_ca_file: str | None = Field(None, description="CA bundle that signed the broker's certificate (mqtts://); None: the system's")
    ssl_certfile: str | None = Field(None, description="serve HTTPS with this certificate chain (PEM); None: plain HTTP")
    ssl_keyfile: str | None = Field(None, description="private key of ssl_certfile (PEM)")
    # identity and sign-in (backend/identity, backend/api/deps.py, backend/api/middleware.py)
    secret_key: SecretStr | None = Field(
        None, description="wraps device keys at rest (the former single secret: keys it wrapped stay readable); "
                          "unset: development generates one into keys_file, production refuses to start")
    token_key: SecretStr | None = Field(
        None, description="signs people's access tokens (HS256); unset: development generates one into keys_file, "
                          "production refuses to start")
    keys_file: Path = Field(Path(".vigil/keys.json"), description="where development keeps the keys it generated (owner-only)")
    trusted_proxies: list[str] = Field(
        [], description="addresses or networks of reverse proxies whose X-Forwarded-For names the client; none by default")
    login_max_failures: int = Field(10, ge=1, description="failed sign-ins per username (from any address) before a wait")
    login_max_failures_per_address: int = Field(20, ge=1, description="failed sign-ins per client address (any username) before a wait")
    login_window_s: float = Field(60.0, gt=0, description="the window in which failed sign-ins are counted")
    enrolment_code_ttl_s: int = Field(900, gt=0, description="how long an officer's one-time enrolment code stays valid")
    live_ticket_ttl_s: float = Field(30.0, gt=0, description="how long a live-feed ticket (POST /api/v1/live/ticket) stays valid")
    live_heartbeat_s: float = Field(5.0, gt=0, description="how often the live feed tells a page it is alive (the page's "
                                    "Live badge goes to 'reconnecting' after three missed)")
    # privacy (backend/privacy/service.py)
    policy_file: Path = Field(SHIPPED_POLICY, description="the policy document this deployment ships")
    raw_retention_hours: float | None = Field(None, gt=0, le=RAW_CEILING_HOURS,
                                              description="keep raw waveforms for less than the policy says (never more)")
    retention_interval_s: float = Field(600.0, gt=0, description="how often retention runs")
    audit_drain_interval_s: float = Field(1.0, gt=0, description="how often trigger-written audit events enter the chain")
    audit_anchor_file: Path | None = Field(None, description="where to write the audit head after each retention run")
    # database roles and purpose (backend/db/engine.py, backend/privacy): the service runs as a login
    # member of vigil_api that owns nothing (database_url); migrations run as the tables' owner.
    migration_database_url: str | None = Field(
        None, description="URL of the role that owns the tables, for migrations only; default: database_url (development)")

    @property
    def sync_migration_database_url(self) -> str:
        """The owner's URL for Alembic (psycopg2); the runtime URL when none is set."""
        return (self.migration_database_url or self.database_url).replace("+asyncpg", "+psycopg2")

    @model_validator(mode="after")
    def _keys_of_our_own(self) -> "BackendSettings":
        keys = {"VIGIL_SECRET_KEY": self.secret_key, "VIGIL_TOKEN_KEY": self.token_key}
        for name, key in keys.items():
            if key is None:
                if self.environment == "production":
                    raise ConfigurationError(f"{name} must be set in production (development generates its own keys)")
                continue
            if key.get_secret_value() == DEVELOPMENT_SECRET:
                raise ConfigurationError(f"{name} is the published development secret; set a key of your own")
            if len(key.get_secret_value()) < MIN_KEY_CHARS:
                raise ConfigurationError(f"{name} must be at least {MIN_KEY_CHARS} characters")
        if self.secret_key and self.token_key and self.secret_key.get_secret_value() == self.token_key.get_secret_value():
            raise ConfigurationError("VIGIL_SECRET_KEY and VIGIL_TOKEN_KEY must differ: one wraps device keys, one signs tokens")
        if bool(self.broker_admin_username) != bool(self.broker_admin_password):
            raise ConfigurationError("set both VIGIL_BROKER_ADMIN_USERNAME and VIGIL_BROKER_ADMIN_PASSWORD, or neither")
        if bool(self.ssl_certfile) != bool(self.ssl_keyfile):
            raise ConfigurationError("set both VIGIL_SSL_CERTFILE and VIGIL_SSL_KEYFILE, or neither")
        return self

    @property
    def sync_database_url(self) -> str:
        """The same database for synchronous tools (Alembic): psycopg2 driver."""
        return self.database_url.replace("+asyncpg", "+psycopg2")
