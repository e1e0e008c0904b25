"""backup jobs as workflows: generations, leases, lag; sync namespaces, slice
ranges, slices, oplog segments

Revision ID: 0002
Revises: 0001
Create Date: 2024-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TZ = sa.DateTime(timezone=True)


def _job_columns() -> tuple[sa.Column, ...]:
    return (
        sa.Column("generation", sa.Integer(), server_default="1", nullable=False),
        sa.Column("source_ts", sa.BigInteger(), nullable=True),
        sa.Column("lag_seconds", sa.Float(), nullable=True),
        sa.Column("last_round_at", _TZ, nullable=True),
        sa.Column("last_apply_at", _TZ, nullable=True),
        sa.Column("synced_at", _TZ, nullable=True),
        sa.Column("oplog_lease_owner", sa.String(64), nullable=True),
        sa.Column("oplog_lease_expires", _TZ, nullable=True),
        sa.Column("head_lease_owner", sa.String(64), nullable=True),
        sa.Column("head_lease_expires", _TZ, nullable=True),
        sa.Column("workflow_id", sa.String(64), nullable=True),
    )


def _job_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(["job_id"], ["backup_jobs.id"],
                                   name=op.f(f"fk_{table}_job_id_backup_jobs"),
                                   ondelete="CASCADE")


def upgrade() -> None:
    with op.batch_alter_table("backup_jobs") as batch:
        for column in _job_columns():
            batch.add_column(column)
    _create_sync_namespaces()
    _create_slice_ranges()
    _create_slices()
    _create_oplog_segments()


def _create_sync_namespaces() -> None:
    op.create_table(
        "sync_namespaces",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("db", sa.String(255), nullable=False),
        sa.Column("coll", sa.String(255), nullable=False),
        sa.Column("uuid", sa.LargeBinary(), nullable=True),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("options", sa.LargeBinary(), nullable=False),
        sa.Column("indexes", sa.LargeBinary(), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        _job_fk("sync_namespaces"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sync_namespaces")),
        sa.UniqueConstraint("job_id", "generation", "db", "coll",
                            name="uq_sync_namespaces_job_ns"),
    )


def _create_slice_ranges() -> None:
    op.create_table(
        "slice_ranges",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("namespace_id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("lo", sa.LargeBinary(), nullable=True),
        sa.Column("hi", sa.LargeBinary(), nullable=True),
        sa.Column("resume_after", sa.LargeBinary(), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        sa.Column("lease_expires", _TZ, nullable=True),
        sa.Column("enqueued_at", _TZ, nullable=True),
        sa.Column("slices", sa.Integer(), nullable=False),
        sa.Column("docs", sa.BigInteger(), nullable=False),
        sa.Column("nbytes", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", _TZ, nullable=False),
        sa.CheckConstraint("state IN ('pending', 'done')", name=op.f("ck_slice_ranges_state")),
        _job_fk("slice_ranges"),
        sa.ForeignKeyConstraint(["namespace_id"], ["sync_namespaces.id"],
                                name=op.f("fk_slice_ranges_namespace_id_sync_namespaces"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_slice_ranges")),
    )
    op.create_index("ix_slice_ranges_job_gen_state", "slice_ranges",
                    ["job_id", "generation", "state"])
    op.create_index(op.f("ix_slice_ranges_namespace_id"), "slice_ranges", ["namespace_id"])


def _create_slices() -> None:
    op.create_table(
        "slices",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("range_id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("object_name", sa.Text(), nullable=False),
        sa.Column("docs", sa.Integer(), nullable=False),
        sa.Column("nbytes", sa.BigInteger(), nullable=False),
        sa.Column("first_key", sa.LargeBinary(), nullable=True),
        sa.Column("last_key", sa.LargeBinary(), nullable=True),
        sa.Column("loaded", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("created_at", _TZ, nullable=False),
        sa.ForeignKeyConstraint(["range_id"], ["slice_ranges.id"],
                                name=op.f("fk_slices_range_id_slice_ranges"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_slices")),
        sa.UniqueConstraint("range_id", "seq", name="uq_slices_range_seq"),
    )


def _create_oplog_segments() -> None:
    op.create_table(
        "oplog_segments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("after_ts", sa.BigInteger(), nullable=False),
        sa.Column("last_ts", sa.BigInteger(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("nbytes", sa.BigInteger(), nullable=False),
        sa.Column("object_name", sa.Text(), nullable=False),
        sa.Column("created_at", _TZ, nullable=False),
        _job_fk("oplog_segments"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_oplog_segments")),
        sa.UniqueConstraint("job_id", "generation", "after_ts",
                            name="uq_oplog_segments_start"),
    )
    op.create_index("ix_oplog_segments_job_last", "oplog_segments", ["job_id", "last_ts"])


def downgrade() -> None:
    op.drop_table("oplog_segments")
    op.drop_table("slices")
    op.drop_table("slice_ranges")
    op.drop_table("sync_namespaces")
    with op.batch_alter_table("backup_jobs") as batch:
        for column in reversed(_job_columns()):
            batch.drop_column(column.name)
