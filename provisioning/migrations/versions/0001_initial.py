"""The provisioning records, first version (customers, the number pool and its holds, devices,
operator certificates, changes and their steps, access lists, billing records, the audit log,
staff and console sessions).

Revision ID: 0001
Revises:
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def _partial(name: str, table: str, column: str, where: str) -> None:
    op.create_index(name, table, [column], unique=True, sqlite_where=sa.text(where),
                    postgresql_where=sa.text(where))


def upgrade() -> None:
    op.create_table(
        "customers",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("address", sa.String(400), nullable=False),
        sa.Column("options", sa.JSON, nullable=False),
        sa.Column("headend", sa.String(64), nullable=False),
        sa.Column("number", sa.String(15), nullable=True),
        sa.Column("mac", sa.String(17), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )
    _partial("uq_customers_live_mac", "customers", "mac", "state != 'terminated'")
    op.create_index("ix_customers_number", "customers", ["number"])
    op.create_index("ix_customers_name", "customers", ["name"])

    op.create_table(
        "phone_numbers",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("number", sa.String(15), nullable=False, unique=True),
        sa.Column("headend", sa.String(64), nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index("ix_phone_numbers_headend", "phone_numbers", ["headend", "number"])

    op.create_table(
        "number_holds",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("number_id", sa.Integer, sa.ForeignKey("phone_numbers.id"), nullable=False),
        sa.Column("customer_id", sa.Integer, sa.ForeignKey("customers.id"), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("assigned_at", TS, nullable=False),
        sa.Column("released_at", TS, nullable=True),
        sa.Column("held_until", TS, nullable=True),
        sa.CheckConstraint("state IN ('assigned', 'quarantined', 'released')",
                           name="ck_number_holds_state"),
    )
    # The rule that a number is never assigned twice (nor while in quarantine).
    _partial("uq_number_holds_live", "number_holds", "number_id", "state != 'released'")
    _partial("uq_number_holds_customer", "number_holds", "customer_id", "state = 'assigned'")

    op.create_table(
        "devices",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("mac", sa.String(17), nullable=False, unique=True),
        sa.Column("factory_thumbprint", sa.String(64), nullable=False),
        sa.Column("factory_cert", sa.LargeBinary, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("customer_id", sa.Integer, sa.ForeignKey("customers.id"), nullable=True),
        sa.Column("operator_serial", sa.String(40), nullable=True),
        sa.Column("address", sa.String(64), nullable=True),
        sa.Column("controller", sa.String(255), nullable=True),
        sa.Column("reported_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )

    op.create_table(
        "certificates",
        sa.Column("serial", sa.String(40), primary_key=True),
        sa.Column("mac", sa.String(17), nullable=False),
        sa.Column("customer_id", sa.Integer, sa.ForeignKey("customers.id"), nullable=False),
        sa.Column("number", sa.String(15), nullable=False),
        sa.Column("not_before", TS, nullable=False),
        sa.Column("not_after", TS, nullable=False),
        sa.Column("der", sa.LargeBinary, nullable=False),
        sa.Column("revoked_at", TS, nullable=True),
        sa.Column("revocation_reason", sa.String(32), nullable=True),
    )
    op.create_index("ix_certificates_customer", "certificates", ["customer_id"])

    op.create_table(
        "changes",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("customer_id", sa.Integer, sa.ForeignKey("customers.id"), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("detail", sa.JSON, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("done_at", TS, nullable=True),
    )
    _partial("uq_changes_pending", "changes", "customer_id", "state = 'pending'")

    op.create_table(
        "tasks",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("change_id", sa.Integer, sa.ForeignKey("changes.id"), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("target", sa.String(128), nullable=False),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("last_error", sa.String(500), nullable=True),
        sa.Column("not_before", TS, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("done_at", TS, nullable=True),
        sa.Column("result", sa.JSON, nullable=True),
    )
    op.create_index("ix_tasks_pending", "tasks", ["state", "id"])

    op.create_table(
        "access_entries",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("headend", sa.String(64), nullable=False),
        sa.Column("mac", sa.String(17), nullable=False),
        sa.Column("desired", sa.String(8), nullable=False),
        sa.Column("number", sa.String(15), nullable=True),
        sa.Column("acked_version", sa.Integer, nullable=True),
        sa.Column("acked_state", sa.String(8), nullable=True),
        sa.Column("acked_at", TS, nullable=True),
        sa.Column("updated_at", TS, nullable=False),
        sa.UniqueConstraint("headend", "mac", name="uq_access_entries_headend_mac"),
    )

    op.create_table(
        "billing_records",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("customer_id", sa.Integer, sa.ForeignKey("customers.id"), nullable=False),
        sa.Column("change_id", sa.Integer, sa.ForeignKey("changes.id"), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("account", sa.String(16), nullable=False),
        sa.Column("detail", sa.JSON, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("acked_at", TS, nullable=True),
        sa.Column("acked_by", sa.String(128), nullable=True),
    )
    op.create_index("ix_billing_records_pending", "billing_records", ["acked_at", "id"])

    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("at", TS, nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("entity", sa.String(32), nullable=False),
        sa.Column("entity_id", sa.String(64), nullable=False),
        sa.Column("detail", sa.JSON, nullable=False),
    )
    op.create_index("ix_audit_log_entity", "audit_log", ["entity", "entity_id"])

    op.create_table(
        "staff",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("username", sa.String(64), nullable=False, unique=True),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("disabled", sa.Boolean, nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_table(
        "sessions",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("staff_id", sa.Integer, sa.ForeignKey("staff.id"), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
    )


def downgrade() -> None:
    for table in ("sessions", "staff", "audit_log", "billing_records", "access_entries",
                  "tasks", "changes", "certificates", "devices", "number_holds",
                  "phone_numbers", "customers"):
        op.drop_table(table)
