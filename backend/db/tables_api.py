"""Tables of the API area (migration 0002_api): people and their tokens, gateway credentials
and the devices each gateway serves, and the downlink commands sent to devices.

A separate MetaData on purpose: migration 0001 creates every table of ``tables.metadata``,
so tables added later live here and are created by their own migration."""
from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import UUID

from backend.db import schema as t

metadata = sa.MetaData()

users = sa.Table(
    "users", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("username", sa.Text, nullable=False, unique=True),
    sa.Column("password_hash", sa.Text, nullable=False),  # argon2id
    sa.Column("role", sa.Text, nullable=False),
    sa.Column("agency_id", sa.Text, sa.ForeignKey(t.agencies.c.id), nullable=False, index=True),
    sa.Column("officer_id", sa.Integer, sa.ForeignKey(t.officers.c.id)),
    sa.Column("disabled", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.CheckConstraint("role in ('officer', 'supervisor', 'fleet_admin', 'auditor')", name="user_role"),
    sa.CheckConstraint("role <> 'officer' or officer_id is not null", name="officer_user_has_officer"),
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
    sa.Column("gateway_id", sa.Text, sa.ForeignKey(t.gateways.c.id), primary_key=True),
    sa.Column("mqtt_username", sa.Text, nullable=False, unique=True),
    sa.Column("mqtt_password_hash", sa.Text, nullable=False),
)

gateway_devices = sa.Table(
    "gateway_devices", metadata,
    sa.Column("gateway_id", sa.Text, sa.ForeignKey(t.gateways.c.id), primary_key=True),
    sa.Column("device_id", sa.BigInteger, sa.ForeignKey(t.devices.c.id), primary_key=True),
)

# Per-device downlink sequence: the device refuses a command whose seq it has seen, so the
# counter must only grow, across restarts. Blocks are reserved ahead so a command can still be
# sealed while the database is briefly away.
command_seq = sa.Table(
    "device_command_seq", metadata,
    sa.Column("device_id", sa.BigInteger, sa.ForeignKey(t.devices.c.id), primary_key=True),
    sa.Column("reserved_through", sa.BigInteger, nullable=False),
)

downlink_commands = sa.Table(
    "downlink_commands", metadata,
    sa.Column("device_id", sa.BigInteger, sa.ForeignKey(t.devices.c.id), primary_key=True),
    sa.Column("seq", sa.BigInteger, primary_key=True),
    sa.Column("command", sa.Text, nullable=False),
    sa.Column("alert_id", UUID(as_uuid=True), sa.ForeignKey(t.alerts.c.id)),
    sa.Column("gateway_id", sa.Text, nullable=False),
    sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("result_ok", sa.Boolean),
    sa.Column("result_error", sa.Text),
    sa.Column("result_at", sa.DateTime(timezone=True)),
)
