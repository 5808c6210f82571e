"""Metadata and the job queue: SQLAlchemy on a SQLite file by default, PostgreSQL to scale out."""
