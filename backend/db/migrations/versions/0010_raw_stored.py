"""Which telemetry frames' samples are stored: the journal's replay skips them.

``raw_stored``: per device, a window of the sequence numbers whose samples are in
``raw_windows`` (highest, and a bitmap of the numbers below it), written in the same
transaction as the rows. After a crash the backend replays its local telemetry journal
(backend/ingest/journal.py) and skips the frames this says are stored, so nothing is stored
twice.

Revision ID: 0010_raw_stored
Revises: 0009_durability
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010_raw_stored"
down_revision = "0009_durability"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "raw_stored",
        sa.Column("device_id", sa.BigInteger, sa.ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("highest", sa.BigInteger, nullable=False),
        sa.Column("seen", sa.LargeBinary, nullable=False),
    )
    op.get_bind().execute(sa.text("select vigil_apply_privacy_grants()"))


def downgrade() -> None:
    op.drop_table("raw_stored")
