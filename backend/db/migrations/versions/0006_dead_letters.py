"""Dead letters: uplink messages whose handling raised, kept for inspection.

Ingest refuses such a message with a reason, acknowledges it (so the broker does not hand it back
for ever) and keeps its bytes here. The payload is the device's ciphertext, which the backend can
open: the table is listed among the biometric relations (no reporting or auditor access).

Revision ID: 0006_dead_letters
Revises: 0005_audit_heartbeat
"""
import sqlalchemy as sa
from alembic import op

revision = "0006_dead_letters"
down_revision = "0005_audit_heartbeat"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('dead_letters',
        sa.Column('id', sa.BigInteger(), nullable=False),
        sa.Column('at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.Column('topic', sa.Text(), nullable=False),
        sa.Column('payload', sa.LargeBinary(), nullable=False),
        sa.Column('stage', sa.Text(), nullable=False),
        sa.Column('error', sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint('id')
    )
    op.create_index('dead_letters_at', 'dead_letters', ['at'], unique=False)
    op.execute("insert into privacy_biometric_tables (name) values ('dead_letters') on conflict do nothing")
    op.execute("select vigil_apply_privacy_grants()")


def downgrade() -> None:
    op.execute("delete from privacy_biometric_tables where name = 'dead_letters'")
    op.drop_table('dead_letters')
