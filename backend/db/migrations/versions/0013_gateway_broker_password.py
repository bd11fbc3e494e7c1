"""Gateways admitted by the broker's dynamic security plugin (issue 21).

``gateway_mqtt.password_wrapped``: the gateway's MQTT password, wrapped under ``secret_key``
as device keys are (backend/identity/security.py). The plugin's control API creates a client only
from its password, so the backend keeps it to re-create a gateway on a broker restarted from an
old state (backend/identity/broker.py, reconciliation). NULL for gateways registered before: such
a gateway is admitted from its stored hash only when the broker's configuration is generated
(``vigil broker init``), and reported when a live broker lacks it.

Revision ID: 0013_gateway_broker_password
Revises: 0012_officer_messages
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013_gateway_broker_password"
down_revision = "0012_officer_messages"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("gateway_mqtt", sa.Column("password_wrapped", sa.LargeBinary))
    op.get_bind().execute(sa.text("select vigil_apply_privacy_grants()"))


def downgrade() -> None:
    op.drop_column("gateway_mqtt", "password_wrapped")
