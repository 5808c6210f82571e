"""Alembic environment: segport runs migrations programmatically (see ``segport.store.db.migrate``)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from segport.store.models import Base

config = context.config
target_metadata = Base.metadata


def run() -> None:
    connection = config.attributes.get("connection")
    if connection is None:  # `alembic` command line, for authors of new migrations
        engine = create_engine(config.get_main_option("sqlalchemy.url") or "sqlite:///dev-meta.sqlite")
        with engine.connect() as conn:
            context.configure(connection=conn, target_metadata=target_metadata, render_as_batch=True)
            with context.begin_transaction():
                context.run_migrations()
        return
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


run()
