"""API area: users, revoked tokens, gateway MQTT credentials and served devices, downlink
commands and their per-device sequence.

Revision ID: 0002_api
Revises: 0001
"""
from alembic import op

from backend.db import tables_api as api

revision = "0002_api"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    api.metadata.create_all(op.get_bind())


def downgrade() -> None:
    api.metadata.drop_all(op.get_bind())
