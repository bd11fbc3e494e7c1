"""A device's heartbeat columns stay out of the audit chain.

The backend writes ``devices.last_seen`` and ``battery_pct`` for every connected device every
few seconds (device status). 0004's row trigger turned each such write into an audit entry
("provisioning.devices.update"): 600 entries a second at 3,000 devices, burying the changes an
auditor looks for and costing the backend a tenth of its event loop. Updates now enter the chain
only when something other than those two columns changed (retire, reassign agency, firmware
reported for the first time or changed); inserts as before.

Revision ID: 0005_audit_heartbeat
Revises: 0004_privacy
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_audit_heartbeat"
down_revision = "0004_privacy"
branch_labels = None
depends_on = None

# written by device status (backend/detection/service.py), not by a person
HEARTBEAT_COLUMNS = ("last_seen", "battery_pct")


def upgrade() -> None:
    quiet = " - ".join(f"'{c}'" for c in HEARTBEAT_COLUMNS)
    # the insert trigger keeps 0004's name, so vigil_install_audit_triggers() sees it in place
    op.get_bind().execute(sa.text(f"""
drop trigger if exists vigil_audit_devices on devices;
create trigger vigil_audit_devices after insert on devices
    for each row execute function vigil_audit_row_change();
create trigger vigil_audit_devices_changed after update on devices
    for each row when ((to_jsonb(old) - {quiet}) is distinct from (to_jsonb(new) - {quiet}))
    execute function vigil_audit_row_change();
"""))


def downgrade() -> None:
    op.get_bind().execute(sa.text("""
drop trigger if exists vigil_audit_devices_changed on devices;
drop trigger if exists vigil_audit_devices on devices;
create trigger vigil_audit_devices after insert or update on devices
    for each row execute function vigil_audit_row_change();
"""))
