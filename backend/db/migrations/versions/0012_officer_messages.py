"""Messages felt on officers' wearables, and their progress (issue 21).

``officer_messages``: one row per message sent to an officer's wearable as a haptic pattern
(backend/incidents/messages.py): a supervisor's, or "colleague needs help" to officers near a
colleague's SOS or man-down (``alert_id``: that incident). Its times are its progress: sent to
the gateway, written to the device, confirmed by the officer's press; ``failed_at``/``error``
when it was not sent or not delivered. No physiological data.

Revision ID: 0012_officer_messages
Revises: 0011_incident_workflow
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

revision = "0012_officer_messages"
down_revision = "0011_incident_workflow"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "officer_messages",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("agency_id", sa.Text, sa.ForeignKey("agencies.id"), nullable=False),
        sa.Column("officer_id", sa.Integer, sa.ForeignKey("officers.id"), nullable=False),
        sa.Column("device_id", sa.BigInteger, sa.ForeignKey("devices.id"), nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("sent_by", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("alert_id", UUID(as_uuid=True), sa.ForeignKey("alerts.id")),
        sa.Column("distance_m", sa.Float),
        sa.Column("gateway_id", sa.Text),
        sa.Column("command_seq", sa.BigInteger),
        sa.Column("sent_at", sa.DateTime(timezone=True)),
        sa.Column("delivered_at", sa.DateTime(timezone=True)),
        sa.Column("confirmed_at", sa.DateTime(timezone=True)),
        sa.Column("failed_at", sa.DateTime(timezone=True)),
        sa.Column("error", sa.Text),
    )
    op.create_index("ix_officer_messages_officer_id", "officer_messages", ["officer_id"])
    op.create_index("ix_officer_messages_alert_id", "officer_messages", ["alert_id"])
    op.get_bind().execute(sa.text("select vigil_apply_privacy_grants()"))


def downgrade() -> None:
    op.drop_table("officer_messages")
