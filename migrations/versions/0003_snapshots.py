"""snapshots: snapshots, block index and references, policies, groom runs

Revision ID: 0003
Revises: 0002
Create Date: 2024-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# The models of these tables live in their own module; importing it here
# registers them on the shared metadata wherever the revisions are loaded.
import backupflows.catalog.snapshot_models  # noqa: F401

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = sa.DateTime(timezone=True)


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN (" + ", ".join(f"'{v}'" for v in values) + ")"


def upgrade() -> None:
    op.create_table(
        "snapshots",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("store", sa.String(16), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("on_demand", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("optime_ts", sa.BigInteger(), nullable=True),
        sa.Column("optime_t", sa.BigInteger(), nullable=True),
        sa.Column("head_generation", sa.BigInteger(), nullable=False),
        sa.Column("head_mark", sa.BigInteger(), nullable=True),
        sa.Column("wall_time", _TS, nullable=True),
        sa.Column("bytes_stored", sa.BigInteger(), nullable=False),
        sa.Column("bytes_logical", sa.BigInteger(), nullable=False),
        sa.Column("docs", sa.BigInteger(), nullable=False),
        sa.Column("manifest", sa.String(512), nullable=True),
        sa.Column("parent_id", sa.Integer(), nullable=True),
        sa.Column("expires_at", _TS, nullable=True),
        sa.Column("lease_until", _TS, nullable=True),
        sa.Column("pinned_until", _TS, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("completed_at", _TS, nullable=True),
        sa.CheckConstraint(_in("state", ("pending", "done", "expired", "failed")),
                           name=op.f("ck_snapshots_state")),
        sa.CheckConstraint(_in("kind", ("full", "incremental", "synthetic")),
                           name=op.f("ck_snapshots_kind")),
        sa.CheckConstraint(_in("store", ("blockstore", "filesystem")),
                           name=op.f("ck_snapshots_store")),
        sa.ForeignKeyConstraint(["job_id"], ["backup_jobs.id"],
                                name=op.f("fk_snapshots_job_id_backup_jobs"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["parent_id"], ["snapshots.id"],
                                name=op.f("fk_snapshots_parent_id_snapshots"), ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_snapshots")),
    )
    op.create_index("ix_snapshots_job_id_state", "snapshots", ["job_id", "state"])
    op.create_table(
        "snapshot_blocks",
        sa.Column("snapshot_id", sa.Integer(), nullable=False),
        sa.Column("block_id", sa.String(64), nullable=False),
        sa.ForeignKeyConstraint(["snapshot_id"], ["snapshots.id"],
                                name=op.f("fk_snapshot_blocks_snapshot_id_snapshots"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("snapshot_id", "block_id", name=op.f("pk_snapshot_blocks")),
    )
    op.create_index("ix_snapshot_blocks_block_id", "snapshot_blocks", ["block_id"])
    op.create_table(
        "snapshot_deps",
        sa.Column("snapshot_id", sa.Integer(), nullable=False),
        sa.Column("dep_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["snapshot_id"], ["snapshots.id"],
                                name=op.f("fk_snapshot_deps_snapshot_id_snapshots"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["dep_id"], ["snapshots.id"],
                                name=op.f("fk_snapshot_deps_dep_id_snapshots"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("snapshot_id", "dep_id", name=op.f("pk_snapshot_deps")),
    )
    op.create_index("ix_snapshot_deps_dep_id", "snapshot_deps", ["dep_id"])
    op.create_table(
        "blocks",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("stored_size", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("touched_gen", sa.BigInteger(), nullable=False),
        sa.Column("last_touched", _TS, nullable=False),
        sa.Column("groom_id", sa.Integer(), nullable=True),
        sa.CheckConstraint("state IN ('live', 'deleting')", name=op.f("ck_blocks_state")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_blocks")),
    )
    op.create_index("ix_blocks_state_touched_gen", "blocks", ["state", "touched_gen"])
    op.create_table(
        "storage_state",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("gen", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_storage_state")),
    )
    _policies()
    op.create_table(
        "groom_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("gen", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("on_demand", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("started_at", _TS, nullable=False),
        sa.Column("finished_at", _TS, nullable=True),
        sa.Column("lease_until", _TS, nullable=True),
        sa.Column("blocks_deleted", sa.BigInteger(), nullable=False),
        sa.Column("bytes_freed", sa.BigInteger(), nullable=False),
        sa.Column("manifests_deleted", sa.BigInteger(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.CheckConstraint("state IN ('running', 'done', 'failed')",
                           name=op.f("ck_groom_runs_state")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_groom_runs")),
    )


def _policies() -> None:
    op.create_table(
        "snapshot_policies",
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("interval_hours", sa.Integer(), nullable=False),
        sa.Column("reference_hour", sa.Integer(), nullable=False),
        sa.Column("reference_minute", sa.Integer(), nullable=False),
        sa.Column("base_retention_days", sa.Integer(), nullable=False),
        sa.Column("daily_retention_days", sa.Integer(), nullable=False),
        sa.Column("weekly_retention_weeks", sa.Integer(), nullable=False),
        sa.Column("monthly_retention_months", sa.Integer(), nullable=False),
        sa.Column("pit_window_hours", sa.Integer(), nullable=False),
        sa.Column("store", sa.String(16), nullable=False),
        sa.Column("fs_gzip", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("full_every", sa.Integer(), nullable=False),
        sa.Column("full_delta_percent", sa.Integer(), nullable=False),
        sa.Column("enabled", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.CheckConstraint("interval_hours IN (6, 8, 12, 24)",
                           name=op.f("ck_snapshot_policies_interval_hours")),
        sa.CheckConstraint("base_retention_days BETWEEN 2 AND 5",
                           name=op.f("ck_snapshot_policies_base_retention_days")),
        sa.CheckConstraint(_in("store", ("blockstore", "filesystem")),
                           name=op.f("ck_snapshot_policies_store")),
        sa.ForeignKeyConstraint(["job_id"], ["backup_jobs.id"],
                                name=op.f("fk_snapshot_policies_job_id_backup_jobs"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("job_id", name=op.f("pk_snapshot_policies")),
    )


def downgrade() -> None:
    op.drop_table("groom_runs")
    op.drop_table("snapshot_policies")
    op.drop_table("storage_state")
    op.drop_table("blocks")
    op.drop_table("snapshot_deps")
    op.drop_table("snapshot_blocks")
    op.drop_table("snapshots")
