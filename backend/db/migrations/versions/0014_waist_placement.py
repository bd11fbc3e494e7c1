"""The product is worn at the waist (issue 18, hardware/README.md "Where it is worn"): a device
provisioned without a placement is a waist unit. Devices already provisioned keep theirs.

Revision ID: 0014_waist_placement
Revises: 0013_gateway_broker_password
"""
from __future__ import annotations

from alembic import op

revision = "0014_waist_placement"
down_revision = "0013_gateway_broker_password"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.alter_column("devices", "placement", server_default="waist")


def downgrade() -> None:
    op.alter_column("devices", "placement", server_default="upper_arm")
