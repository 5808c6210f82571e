"""Computed tags: the definition of a tag computed from events, beside its catalogue entry, and its detector

A row belongs to the catalogue's ``tag_`` entry of the same key (removing the entry removes the definition).

Revision ID: tag_definitions
Revises: event_catalog
"""

import sqlalchemy as sa
from alembic import op

revision = "tag_definitions"
down_revision = "event_catalog"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tag_definitions",
        sa.Column("project_id", sa.String(length=8), nullable=False),
        sa.Column("key", sa.String(length=110), nullable=False),
        sa.Column("type", sa.String(length=24), nullable=False),
        sa.Column("definition", sa.Text(), nullable=False),
        sa.Column("scheduler", sa.String(length=10), nullable=False),
        sa.Column("detector_stage", sa.String(length=10), nullable=False),
        sa.Column("detected_at", sa.DateTime(), nullable=True),
        sa.Column("total_users", sa.Integer(), nullable=False),
        sa.Column("detector_error", sa.Text(), nullable=True),
        sa.Column("creator", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["project_id", "key"], ["catalog.project_id", "catalog.key"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("project_id", "key"),
    )


def downgrade() -> None:
    op.drop_table("tag_definitions")
