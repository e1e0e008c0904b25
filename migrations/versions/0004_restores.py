"""restores: restores and their download links

Revision ID: 0004
Revises: 0003
Create Date: 2024-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# The models of these tables live in their own module; importing it here
# registers them on the shared metadata wherever the revisions are loaded.
import backupflows.catalog.restore_models  # noqa: F401

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = sa.DateTime(timezone=True)


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN (" + ", ".join(f"'{v}'" for v in values) + ")"


def upgrade() -> None:
    op.create_table(
        "restores",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.String(200), nullable=True),
        sa.Column("deployment_id", sa.Integer(), nullable=True),
        sa.Column("deployment_name", sa.String(200), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("snapshot_id", sa.Integer(), nullable=True),
        sa.Column("point_ts", sa.BigInteger(), nullable=True),
        sa.Column("destination_kind", sa.String(16), nullable=False),
        sa.Column("destination", sa.JSON(), nullable=False),
        sa.Column("selection", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("docs", sa.BigInteger(), nullable=False),
        sa.Column("nbytes", sa.BigInteger(), nullable=False),
        sa.Column("collections_done", sa.Integer(), nullable=False),
        sa.Column("collections_total", sa.Integer(), nullable=False),
        sa.Column("step", sa.String(32), nullable=True),
        sa.Column("result", sa.JSON(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("callback_url", sa.Text(), nullable=True),
        sa.Column("callback_state", sa.String(16), nullable=True),
        sa.Column("requester", sa.String(200), nullable=True),
        sa.Column("task_id", sa.String(64), nullable=True),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        sa.Column("lease_until", _TS, nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("started_at", _TS, nullable=True),
        sa.Column("finished_at", _TS, nullable=True),
        sa.CheckConstraint(_in("state", ("queued", "running", "done", "failed")),
                           name=op.f("ck_restores_state")),
        sa.CheckConstraint(_in("destination_kind", ("dir", "archive", "download", "uri")),
                           name=op.f("ck_restores_destination_kind")),
        sa.ForeignKeyConstraint(["deployment_id"], ["deployments.id"],
                                name=op.f("fk_restores_deployment_id_deployments"),
                                ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["job_id"], ["backup_jobs.id"],
                                name=op.f("fk_restores_job_id_backup_jobs"), ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["snapshot_id"], ["snapshots.id"],
                                name=op.f("fk_restores_snapshot_id_snapshots"),
                                ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_restores")),
        sa.UniqueConstraint("request_id", name=op.f("uq_restores_request_id")),
    )
    op.create_index("ix_restores_state", "restores", ["state"])
    op.create_index("ix_restores_deployment_id_id", "restores", ["deployment_id", "id"])
    op.create_table(
        "download_links",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("restore_id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("salt", sa.String(64), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("filename", sa.String(255), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", _TS, nullable=False),
        sa.Column("uses_left", sa.Integer(), nullable=False),
        sa.Column("max_uses", sa.Integer(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.ForeignKeyConstraint(["restore_id"], ["restores.id"],
                                name=op.f("fk_download_links_restore_id_restores"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_download_links")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_download_links_token_hash")),
    )
    op.create_index("ix_download_links_restore_id", "download_links", ["restore_id"])


def downgrade() -> None:
    op.drop_index("ix_download_links_restore_id", table_name="download_links")
    op.drop_table("download_links")
    op.drop_index("ix_restores_deployment_id_id", table_name="restores")
    op.drop_index("ix_restores_state", table_name="restores")
    op.drop_table("restores")
