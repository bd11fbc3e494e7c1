"""API area: users, revoked tokens, gateway MQTT credentials and served devices, downlink
commands and their per-device sequence. Explicit DDL (a snapshot of this revision).

Revision ID: 0002_api
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "0002_api"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('users',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('username', sa.Text(), nullable=False),
        sa.Column('password_hash', sa.Text(), nullable=False),
        sa.Column('role', sa.Text(), nullable=False),
        sa.Column('agency_id', sa.Text(), nullable=False),
        sa.Column('officer_id', sa.Integer(), nullable=True),
        sa.Column('disabled', sa.Boolean(), server_default=sa.text('false'), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.CheckConstraint("role <> 'officer' or officer_id is not null", name='officer_user_has_officer'),
        sa.CheckConstraint("role in ('officer', 'supervisor', 'fleet_admin', 'auditor')", name='user_role'),
        sa.ForeignKeyConstraint(['agency_id'], ['agencies.id'], ),
        sa.ForeignKeyConstraint(['officer_id'], ['officers.id'], ),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('username')
    )
    op.create_index(op.f('ix_users_agency_id'), 'users', ['agency_id'], unique=False)
    op.create_table('revoked_tokens',
        sa.Column('jti', sa.Text(), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('revoked_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.Column('revoked_by', sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint('jti')
    )
    op.create_index(op.f('ix_revoked_tokens_expires_at'), 'revoked_tokens', ['expires_at'], unique=False)
    op.create_table('gateway_mqtt',
        sa.Column('gateway_id', sa.Text(), nullable=False),
        sa.Column('mqtt_username', sa.Text(), nullable=False),
        sa.Column('mqtt_password_hash', sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(['gateway_id'], ['gateways.id'], ),
        sa.PrimaryKeyConstraint('gateway_id'),
        sa.UniqueConstraint('mqtt_username')
    )
    op.create_table('gateway_devices',
        sa.Column('gateway_id', sa.Text(), nullable=False),
        sa.Column('device_id', sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(['device_id'], ['devices.id'], ),
        sa.ForeignKeyConstraint(['gateway_id'], ['gateways.id'], ),
        sa.PrimaryKeyConstraint('gateway_id', 'device_id')
    )
    op.create_table('device_command_seq',
        sa.Column('device_id', sa.BigInteger(), nullable=False),
        sa.Column('reserved_through', sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(['device_id'], ['devices.id'], ),
        sa.PrimaryKeyConstraint('device_id')
    )
    op.create_table('downlink_commands',
        sa.Column('device_id', sa.BigInteger(), nullable=False),
        sa.Column('seq', sa.BigInteger(), nullable=False),
        sa.Column('command', sa.Text(), nullable=False),
        sa.Column('alert_id', sa.UUID(), nullable=True),
        sa.Column('gateway_id', sa.Text(), nullable=False),
        sa.Column('sent_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('result_ok', sa.Boolean(), nullable=True),
        sa.Column('result_error', sa.Text(), nullable=True),
        sa.Column('result_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['alert_id'], ['alerts.id'], ),
        sa.ForeignKeyConstraint(['device_id'], ['devices.id'], ),
        sa.PrimaryKeyConstraint('device_id', 'seq')
    )


def downgrade() -> None:
    for table in ("downlink_commands", "device_command_seq", "gateway_devices", "gateway_mqtt", "revoked_tokens", "users"):
        op.drop_table(table)
