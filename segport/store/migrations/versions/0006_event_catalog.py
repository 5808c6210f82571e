"""The event attribute catalogue (key, display name, type) and the event names a project's store holds

Revision ID: event_catalog
Revises: events_intake
"""

import sqlalchemy as sa
from alembic import op

revision = "event_catalog"
down_revision = "events_intake"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "event_attributes",
        sa.Column("project_id", sa.String(length=8), nullable=False),
        sa.Column("key", sa.String(length=110), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("declared", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("project_id", "key"),
    )
    op.create_table(
        "event_names",
        sa.Column("project_id", sa.String(length=8), nullable=False),
        sa.Column("key", sa.String(length=110), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("attrs", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("project_id", "key"),
    )


def downgrade() -> None:
    op.drop_table("event_names")
    op.drop_table("event_attributes")
