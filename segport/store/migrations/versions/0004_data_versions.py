"""projects.data_version and the data snapshot each job was submitted against and written from

A submit deduplicates on the project's data version; reading it from the metadata store (not the engine)
keeps submits independent of the engine process. Jobs record the version they were submitted against and
the one (and when) their file was read from.

Revision ID: data_versions
Revises: console_sessions
"""

import sqlalchemy as sa
from alembic import op

revision = "data_versions"
down_revision = "console_sessions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("projects", schema=None) as batch_op:
        batch_op.add_column(sa.Column("data_version", sa.BigInteger(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("data_version_at", sa.DateTime(), nullable=True))
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("submit_version", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("data_version", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("data_version_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("data_version_at")
        batch_op.drop_column("data_version")
        batch_op.drop_column("submit_version")
    with op.batch_alter_table("projects", schema=None) as batch_op:
        batch_op.drop_column("data_version_at")
        batch_op.drop_column("data_version")
