"""jobs: 64-bit rows and bytes, room for long lease owners

PostgreSQL enforces what SQLite does not: INTEGER stops at 2^31 - 1 (an export past 2 GiB could not record
its size) and VARCHAR(64) is too short for ``host:pid:random/thread`` when the host name is long.

Revision ID: pg_widen_columns
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "pg_widen_columns"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.alter_column("rows", existing_type=sa.Integer(), type_=sa.BigInteger(), existing_nullable=True)
        batch_op.alter_column("bytes", existing_type=sa.Integer(), type_=sa.BigInteger(), existing_nullable=True)
        batch_op.alter_column(
            "lease_owner", existing_type=sa.String(length=64), type_=sa.String(length=255), existing_nullable=True
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.alter_column(
            "lease_owner", existing_type=sa.String(length=255), type_=sa.String(length=64), existing_nullable=True
        )
        batch_op.alter_column("bytes", existing_type=sa.BigInteger(), type_=sa.Integer(), existing_nullable=True)
        batch_op.alter_column("rows", existing_type=sa.BigInteger(), type_=sa.Integer(), existing_nullable=True)
