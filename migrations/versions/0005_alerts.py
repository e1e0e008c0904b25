"""alerts: alerts and daemon heartbeats

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# The models of these tables live in their own module; importing it here
# registers them on the shared metadata wherever the revisions are loaded.
import backupflows.catalog.ops_models  # noqa: F401

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "alerts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("subject", sa.String(255), nullable=False),
        sa.Column("open_key", sa.String(300), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("deployment_id", sa.Integer(), nullable=True),
        sa.Column("daemon_id", sa.String(200), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("opened_at", _TS, nullable=False),
        sa.Column("closed_at", _TS, nullable=True),
        sa.Column("open_sent_at", _TS, nullable=True),
        sa.Column("close_sent_at", _TS, nullable=True),
        sa.Column("delivery_attempts", sa.Integer(), nullable=False),
        sa.Column("delivery_error", sa.Text(), nullable=True),
        sa.CheckConstraint("state IN ('open', 'closed')", name=op.f("ck_alerts_state")),
        sa.ForeignKeyConstraint(["job_id"], ["backup_jobs.id"],
                                name=op.f("fk_alerts_job_id_backup_jobs"), ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["deployment_id"], ["deployments.id"],
                                name=op.f("fk_alerts_deployment_id_deployments"),
                                ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alerts")),
        sa.UniqueConstraint("open_key", name=op.f("uq_alerts_open_key")),
    )
    op.create_index("ix_alerts_state_id", "alerts", ["state", "id"])
    op.create_index("ix_alerts_job_id_id", "alerts", ["job_id", "id"])
    op.create_table(
        "daemon_heartbeats",
        sa.Column("daemon_id", sa.String(200), nullable=False),
        sa.Column("hostname", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("heads_dir", sa.Text(), nullable=False),
        sa.Column("disk_free", sa.BigInteger(), nullable=True),
        sa.Column("disk_total", sa.BigInteger(), nullable=True),
        sa.Column("seen_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("daemon_id", name=op.f("pk_daemon_heartbeats")),
    )


def downgrade() -> None:
    op.drop_table("daemon_heartbeats")
    op.drop_index("ix_alerts_job_id_id", table_name="alerts")
    op.drop_index("ix_alerts_state_id", table_name="alerts")
    op.drop_table("alerts")
