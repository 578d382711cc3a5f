"""The lines of each signaling controller and the version counter of their feed (GET
/v1/lines): the number and MAC of every open service, per controller, with the operator
certificate to deliver. Customers whose service is open when this revision runs get their
lines, at the controller that reported their device.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-20
"""

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    lines = op.create_table(
        "controller_lines",
        sa.Column("controller", sa.String(255), primary_key=True),
        sa.Column("number", sa.String(15), primary_key=True),
        sa.Column("mac", sa.String(17), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("serial", sa.String(40), nullable=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.CheckConstraint("state IN ('assigned', 'removed')",
                           name="ck_controller_lines_state"),
    )
    op.create_index("ix_controller_lines_version", "controller_lines",
                    ["controller", "version"])
    feed = op.create_table(
        "line_feed",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
    )
    connection = op.get_bind()
    rows = connection.execute(sa.text(
        "SELECT c.number, c.mac, d.controller, d.operator_serial FROM customers c "
        "JOIN devices d ON d.mac = c.mac WHERE c.state IN ('pending', 'active') "
        "AND c.number IS NOT NULL ORDER BY c.id")).all()
    now = datetime.now(UTC)
    assert lines is not None and feed is not None
    op.bulk_insert(lines, [
        {"controller": row.controller or "", "number": row.number, "mac": row.mac,
         "state": "assigned", "serial": row.operator_serial, "version": index,
         "updated_at": now} for index, row in enumerate(rows, start=1)])
    op.bulk_insert(feed, [{"id": 1, "version": len(rows)}])


def downgrade() -> None:
    op.drop_table("line_feed")
    op.drop_index("ix_controller_lines_version", "controller_lines")
    op.drop_table("controller_lines")
