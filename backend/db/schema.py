"""The database schema as SQLAlchemy Core tables: one definition used by queries and by the
migrations (backend/db/migrations). Time-series tables (features) are TimescaleDB hypertables when
the extension is present, natively range-partitioned tables otherwise (see backend/db/engine.py)."""
from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID

metadata = sa.MetaData()

# Which time-series path the first migration took: 'timescaledb' or 'native_partitioning'.
vigil_meta = sa.Table(
    "vigil_meta", metadata,
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

agencies = sa.Table(
    "agencies", metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
)

officers = sa.Table(
    "officers", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("agency_id", sa.Text, sa.ForeignKey("agencies.id"), nullable=False, index=True),
    sa.Column("badge", sa.Text, nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("unit", sa.Text, nullable=False, server_default=""),
    sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.UniqueConstraint("agency_id", "badge"),
)

devices = sa.Table(
    "devices", metadata,
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),  # the frame's device_id
    sa.Column("agency_id", sa.Text, sa.ForeignKey("agencies.id"), nullable=False, index=True),
    sa.Column("key_wrapped", sa.LargeBinary, nullable=False),  # AES-GCM under the backend secret
    sa.Column("placement", sa.Text, nullable=False, server_default="waist"),
    sa.Column("status", sa.Text, nullable=False, server_default="active"),  # active | retired
    sa.Column("firmware", sa.Text),
    sa.Column("battery_pct", sa.SmallInteger),
    sa.Column("last_seen", sa.DateTime(timezone=True)),
    sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.Column("retired_at", sa.DateTime(timezone=True)),
    sa.CheckConstraint("status in ('active', 'retired')", name="device_status"),
    sa.CheckConstraint("id >= 0 and id <= 4294967295", name="device_id_uint32"),
)

gateways = sa.Table(
    "gateways", metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("agency_id", sa.Text, sa.ForeignKey("agencies.id"), nullable=False, index=True),
    sa.Column("token_hash", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.Column("retired_at", sa.DateTime(timezone=True)),
)

assignments = sa.Table(
    "device_assignments", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("device_id", sa.BigInteger, sa.ForeignKey("devices.id"), nullable=False, index=True),
    sa.Column("officer_id", sa.Integer, sa.ForeignKey("officers.id"), nullable=False, index=True),
    sa.Column("starts_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.Column("ends_at", sa.DateTime(timezone=True)),
)

alerts = sa.Table(
    "alerts", metadata,
    # uuid5 of (device_id, event seq): a frame delivered twice can never page twice
    sa.Column("id", UUID(as_uuid=True), primary_key=True),
    sa.Column("agency_id", sa.Text, sa.ForeignKey("agencies.id"), nullable=False, index=True),
    sa.Column("officer_id", sa.Integer, sa.ForeignKey("officers.id")),
    sa.Column("device_id", sa.BigInteger, sa.ForeignKey("devices.id"), nullable=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("priority", sa.SmallInteger, nullable=False),
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("raised_at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("device_time", sa.DateTime(timezone=True)),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("explanation", JSONB, nullable=False),
    sa.Column("location", JSONB),
    sa.Column("outcome", sa.Text),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("priority between 1 and 3", name="alert_priority"),
)

alert_transitions = sa.Table(
    "alert_transitions", metadata,
    sa.Column("id", sa.BigInteger, primary_key=True),
    sa.Column("alert_id", UUID(as_uuid=True), sa.ForeignKey("alerts.id"), nullable=False, index=True),
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("note", sa.Text, nullable=False, server_default=""),
    sa.UniqueConstraint("alert_id", "state", "at", name="alert_transition_once"),
)

# Derived physiological and motion features, 1 Hz per device. Time-partitioned: a hypertable
# under TimescaleDB, a PARTITION BY RANGE (time) table otherwise. No primary key on purpose
# (partitioned tables would need the partition key in it); rows are append-only.
features = sa.Table(
    "features", metadata,
    sa.Column("time", sa.DateTime(timezone=True), nullable=False),
    sa.Column("device_id", sa.BigInteger, nullable=False),
    sa.Column("officer_id", sa.Integer),
    sa.Column("heart_rate", sa.REAL),
    sa.Column("hr_quality", sa.REAL),
    sa.Column("activity", sa.Text),
    sa.Column("posture", sa.Text),
    sa.Column("cadence", sa.REAL),
    sa.Column("motion_energy", sa.REAL),
    sa.Index("features_device_time", "device_id", "time"),
)


# --- people, tokens, gateways' broker credentials, downlink ------------------------------
users = sa.Table(
    "users", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("username", sa.Text, nullable=False, unique=True),
    sa.Column("password_hash", sa.Text, nullable=False),  # argon2id
    sa.Column("role", sa.Text, nullable=False),
    sa.Column("agency_id", sa.Text, sa.ForeignKey("agencies.id"), nullable=False, index=True),
    sa.Column("officer_id", sa.Integer, sa.ForeignKey("officers.id")),
    sa.Column("disabled", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.CheckConstraint("role in ('officer', 'supervisor', 'fleet_admin', 'auditor')", name="user_role"),
    sa.CheckConstraint("role <> 'officer' or officer_id is not null", name="officer_user_has_officer"),
)

# One-time codes with which an officer creates their own account (backend/identity/auth.py):
# issued by a fleet admin, handed over in person, short-lived, used once; only the hash is kept.
enrolment_codes = sa.Table(
    "enrolment_codes", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("code_hash", sa.Text, nullable=False, unique=True),
    sa.Column("agency_id", sa.Text, sa.ForeignKey("agencies.id"), nullable=False),
    sa.Column("officer_id", sa.Integer, sa.ForeignKey("officers.id"), nullable=False),
    sa.Column("issued_by", sa.Text, nullable=False),
    sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("redeemed_at", sa.DateTime(timezone=True)),
    sa.Column("redeemed_by_user", sa.Integer, sa.ForeignKey("users.id")),
    sa.Index("enrolment_codes_officer", "officer_id"),
)

# Token ids (the "jti" claim) revoked before their expiry; rows can go once expires_at passed.
revoked_tokens = sa.Table(
    "revoked_tokens", metadata,
    sa.Column("jti", sa.Text, primary_key=True),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("revoked_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.Column("revoked_by", sa.Text, nullable=False),
)

# The broker's view of a gateway: its MQTT user and the broker-format password hash (PBKDF2,
# made by mosquitto_passwd at registration), so the password file is generated without ever
# storing the password itself.
gateway_mqtt = sa.Table(
    "gateway_mqtt", metadata,
    sa.Column("gateway_id", sa.Text, sa.ForeignKey("gateways.id"), primary_key=True),
    sa.Column("mqtt_username", sa.Text, nullable=False, unique=True),
    sa.Column("mqtt_password_hash", sa.Text, nullable=False),
    # the password itself, wrapped under secret_key (0013): the broker's dynamic security plugin
    # creates a client only from its password, so a broker restarted from an old state can be
    # given the gateway again (backend/identity/broker.py); NULL for gateways registered before
    sa.Column("password_wrapped", sa.LargeBinary),
)

gateway_devices = sa.Table(
    "gateway_devices", metadata,
    sa.Column("gateway_id", sa.Text, sa.ForeignKey("gateways.id"), primary_key=True),
    sa.Column("device_id", sa.BigInteger, sa.ForeignKey("devices.id"), primary_key=True),
)

# Per-device downlink sequence: the device refuses a command whose seq it has seen, so the
# counter must only grow, across restarts. Blocks are reserved ahead so a command can still be
# sealed while the database is briefly away.
command_seq = sa.Table(
    "device_command_seq", metadata,
    sa.Column("device_id", sa.BigInteger, sa.ForeignKey("devices.id"), primary_key=True),
    sa.Column("reserved_through", sa.BigInteger, nullable=False),
)

downlink_commands = sa.Table(
    "downlink_commands", metadata,
    sa.Column("device_id", sa.BigInteger, sa.ForeignKey("devices.id"), primary_key=True),
    sa.Column("seq", sa.BigInteger, primary_key=True),
    sa.Column("command", sa.Text, nullable=False),
    sa.Column("alert_id", UUID(as_uuid=True), sa.ForeignKey("alerts.id")),
    sa.Column("gateway_id", sa.Text, nullable=False),
    sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("result_ok", sa.Boolean),
    sa.Column("result_error", sa.Text),
    sa.Column("result_at", sa.DateTime(timezone=True)),
)

# officer_messages
#     Messages felt on an officer's wearable (backend/incidents/messages.py): a supervisor's, or
#     "colleague needs help" to officers near a colleague's SOS or man-down (alert_id: that
#     incident). Each time is one step of its progress: sent to the gateway, written to the
#     device, confirmed by the officer's press; failed_at/error when it was not sent or not
#     delivered. No physiological data.
officer_messages = sa.Table(
    "officer_messages", metadata,
    sa.Column("id", UUID(as_uuid=True), primary_key=True),
    sa.Column("agency_id", sa.Text, sa.ForeignKey("agencies.id"), nullable=False),
    sa.Column("officer_id", sa.Integer, sa.ForeignKey("officers.id"), nullable=False, index=True),
    sa.Column("device_id", sa.BigInteger, sa.ForeignKey("devices.id"), nullable=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("sent_by", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("alert_id", UUID(as_uuid=True), sa.ForeignKey("alerts.id"), index=True),
    sa.Column("distance_m", sa.Float),
    sa.Column("gateway_id", sa.Text),
    sa.Column("command_seq", sa.BigInteger),
    sa.Column("sent_at", sa.DateTime(timezone=True)),
    sa.Column("delivered_at", sa.DateTime(timezone=True)),
    sa.Column("confirmed_at", sa.DateTime(timezone=True)),
    sa.Column("failed_at", sa.DateTime(timezone=True)),
    sa.Column("error", sa.Text),
)


# --- ingest and detection ----------------------------------------------------------------
# raw_windows
#     The short rolling store of raw waveforms, one row per device per hop (2 s) of samples,
#     exactly as the device sent them. Time-partitioned like ``features`` (a TimescaleDB
#     hypertable, or native daily range partitions kept ready by
#     ``vigil_ensure_partitions``). No primary key (partitioned, append-only).
#
#     ======================  =============================================================
#     time                    wall time of the first sample
#     device_id, officer_id   the device and the officer it was assigned to
#     rate_hz                 samples per second
#     samples                 number of samples (n)
#     ppg                     int[n]: raw PPG counts (uint24)
#     accel_mg                smallint[3n]: x, y, z interleaved, milli-g, device axes
#     backfill                the samples came from the device's buffer after a link outage
#     held_by_alert           uuid of an alert the row is kept for, or NULL
#     ======================  =============================================================
#
# raw_holds
#     Which raw samples are kept around alerts: ``[start, until)`` of one device, per alert.
#     A hold is written when the alert is raised and reaches into the future (``until``), so it
#     covers rows not yet written; rows inside a hold also carry ``held_by_alert``. The retention
#     job deletes raw rows only when ``held_by_alert is null`` and no hold covers them::
#
#         delete from raw_windows r where r.time < :cutoff and r.held_by_alert is null
#           and not exists (select 1 from raw_holds h where h.device_id = r.device_id
#                           and r.time >= h.start and r.time < h.until)
#
# device_status
#     The latest status of each device, one row per device (upserted): battery, charging,
#     worn and skin contact from status frames, the gateway that carried the last frame and the
#     link counters; ``devices.last_seen``, ``battery_pct`` and ``firmware`` are updated too.


raw_windows = sa.Table(
    "raw_windows", metadata,
    sa.Column("time", sa.DateTime(timezone=True), nullable=False),
    sa.Column("device_id", sa.BigInteger, nullable=False),
    sa.Column("officer_id", sa.Integer),
    sa.Column("rate_hz", sa.SmallInteger, nullable=False),
    sa.Column("samples", sa.SmallInteger, nullable=False),
    sa.Column("ppg", ARRAY(sa.Integer), nullable=False),
    sa.Column("accel_mg", ARRAY(sa.SmallInteger), nullable=False),
    sa.Column("backfill", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("held_by_alert", UUID(as_uuid=True)),
    sa.Index("raw_windows_device_time", "device_id", "time"),
)

raw_holds = sa.Table(
    "raw_holds", metadata,
    sa.Column("alert_id", UUID(as_uuid=True), primary_key=True),
    sa.Column("device_id", sa.BigInteger, nullable=False),
    sa.Column("start", sa.DateTime(timezone=True), nullable=False),
    sa.Column("until", sa.DateTime(timezone=True), nullable=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.Index("raw_holds_device_span", "device_id", "start", "until"),
)

device_status = sa.Table(
    "device_status", metadata,
    sa.Column("device_id", sa.BigInteger, sa.ForeignKey("devices.id"), primary_key=True),
    sa.Column("last_seen", sa.DateTime(timezone=True)),
    sa.Column("gateway", sa.Text),
    sa.Column("connected", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("battery_pct", sa.SmallInteger),
    sa.Column("battery_mv", sa.Integer),
    sa.Column("charging", sa.Boolean),
    sa.Column("worn", sa.Boolean),
    sa.Column("skin_contact", sa.Boolean),
    sa.Column("firmware", sa.Text),
    sa.Column("dropped_samples", sa.BigInteger),      # the device's own count (ring overwrites)
    sa.Column("link_gaps", sa.Integer, nullable=False, server_default="0"),
    sa.Column("late_frames", sa.Integer, nullable=False, server_default="0"),
    sa.Column("backfill_frames", sa.Integer, nullable=False, server_default="0"),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)


# --- privacy: the audit chain (backend/privacy/audit.py), policy versions, cohorts ------
audit_log = sa.Table(
    "audit_log", metadata,
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("action", sa.Text, nullable=False),
    sa.Column("subject", sa.Text, nullable=False, server_default=""),
    sa.Column("purpose", sa.Text, nullable=False, server_default=""),
    sa.Column("outcome", sa.Text, nullable=False),
    sa.Column("agency_id", sa.Text),
    sa.Column("details", JSONB, nullable=False),
    sa.Column("prev_hash", sa.Text, nullable=False),
    sa.Column("hash", sa.Text, nullable=False),
    sa.Index("audit_log_at", "at"),  # one incident's entries are read from its time on (migration 0011)
)

audit_outbox = sa.Table(
    "audit_outbox", metadata,
    sa.Column("id", sa.BigInteger, primary_key=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("action", sa.Text, nullable=False),
    sa.Column("subject", sa.Text, nullable=False, server_default=""),
    sa.Column("purpose", sa.Text, nullable=False, server_default=""),
    sa.Column("outcome", sa.Text, nullable=False, server_default="done"),
    sa.Column("agency_id", sa.Text),
    sa.Column("details", JSONB, nullable=False, server_default="{}"),
)

policy_versions = sa.Table(
    "policy_versions", metadata,
    sa.Column("sha256", sa.Text, primary_key=True),
    sa.Column("version", sa.Text, nullable=False),
    sa.Column("document", sa.Text, nullable=False),
    sa.Column("proposed_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("effective_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("proposed_by", sa.Text, nullable=False),
)

# Cohorts an agency records WITH the officer's consent, used only for the fairness breakdown.
officer_cohorts = sa.Table(
    "officer_cohorts", metadata,
    sa.Column("officer_id", sa.Integer, sa.ForeignKey("officers.id", ondelete="CASCADE", name="officer_cohorts_officer_fk"), primary_key=True),
    sa.Column("attribute", sa.Text, primary_key=True),  # e.g. sex, age_band, skin_tone_scale
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("consented_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("withdrawn_at", sa.DateTime(timezone=True)),
)

# Relations that hold biometric data; partitions, chunks and views built on them are found from
# the catalogue by vigil_biometric_relations() (migration 0004_privacy).
privacy_biometric_tables = sa.Table(
    "privacy_biometric_tables", metadata,
    sa.Column("name", sa.Text, primary_key=True),
)

# Time-partitioned tables: hypertables or PARTITION BY RANGE (time); no primary key (append-only).
TIME_SERIES_TABLES = ("features", "raw_windows")

# Uplink messages whose handling raised (ingest refused and acknowledged them): kept for
# inspection, never acted on. The payload is device ciphertext: a biometric relation.
dead_letters = sa.Table(
    "dead_letters", metadata,
    sa.Column("id", sa.BigInteger, primary_key=True),
    sa.Column("at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.Column("topic", sa.Text, nullable=False),
    sa.Column("payload", sa.LargeBinary, nullable=False),
    sa.Column("stage", sa.Text, nullable=False),   # verify | handle
    sa.Column("error", sa.Text, nullable=False),   # exception type and message
    sa.Index("dead_letters_at", "at"),
)

# Per device, the replay window of the frames that were durable when it was saved (migration
# 0009); a restarted backend seeds its windows from it (backend/ingest/replay_state.py).
device_replay = sa.Table(
    "device_replay", metadata,
    sa.Column("device_id", sa.BigInteger, sa.ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("highest", sa.BigInteger, nullable=False),
    sa.Column("seen", sa.LargeBinary, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

# Per device, the window of telemetry sequence numbers whose samples are in raw_windows,
# written with them (migration 0010); the journal's replay skips these frames.
raw_stored = sa.Table(
    "raw_stored", metadata,
    sa.Column("device_id", sa.BigInteger, sa.ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("highest", sa.BigInteger, nullable=False),
    sa.Column("seen", sa.LargeBinary, nullable=False),
)
