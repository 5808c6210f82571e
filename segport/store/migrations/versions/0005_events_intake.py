"""Data sources, projects' collection keys and the event spool (the collect endpoints' durable intake)

A collect request is committed to ``event_batches`` before its 200; the engine loads pending batches from there
and marks them loaded. ``(project_id, dedup_key)`` is unique: a retried request is stored once.

Revision ID: events_intake
Revises: data_versions
"""

import sqlalchemy as sa
from alembic import op

revision = "events_intake"
down_revision = "data_versions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("projects", schema=None) as batch_op:
        batch_op.add_column(sa.Column("collect_key", sa.String(length=32), nullable=True))
        batch_op.create_index("ux_projects_collect_key", ["collect_key"], unique=True)
    op.create_table(
        "datasources",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("project_id", sa.String(length=8), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("revoked_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("datasources", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_datasources_project_id"), ["project_id"], unique=False)
    op.create_table(
        "event_batches",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("project_id", sa.String(length=8), nullable=False),
        sa.Column("datasource_id", sa.String(length=32), nullable=False),
        sa.Column("dedup_key", sa.String(length=64), nullable=False),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.Column("n_events", sa.Integer(), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("loaded_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("event_batches", schema=None) as batch_op:
        batch_op.create_index("ux_event_batches_dedup", ["project_id", "dedup_key"], unique=True)
        batch_op.create_index("ix_event_batches_loaded", ["loaded_at", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("event_batches", schema=None) as batch_op:
        batch_op.drop_index("ix_event_batches_loaded")
        batch_op.drop_index("ux_event_batches_dedup")
    op.drop_table("event_batches")
    with op.batch_alter_table("datasources", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_datasources_project_id"))
    op.drop_table("datasources")
    with op.batch_alter_table("projects", schema=None) as batch_op:
        batch_op.drop_index("ux_projects_collect_key")
        batch_op.drop_column("collect_key")
