"""An index on the audit log's time, for one incident's timeline.

A supervisor's steps on an incident (manual escalation, notes, responder) are transitions in
``alert_transitions`` like every other step, so they need no table of their own. What is new is
reading the audit log per incident (who read the officer's evidence for it, and why: GET
/api/v1/alerts/{id} and GET /api/v1/audit/incidents/{id}); those reads look only at entries
written since the incident was raised, and this index keeps that a range scan however long the
chain grows.

Revision ID: 0011_incident_workflow
Revises: 0010_raw_stored
"""
from __future__ import annotations

from alembic import op

revision = "0011_incident_workflow"
down_revision = "0010_raw_stored"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("audit_log_at", "audit_log", ["at"])


def downgrade() -> None:
    op.drop_index("audit_log_at", table_name="audit_log")
