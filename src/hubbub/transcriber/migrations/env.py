"""Alembic's entry point: migrate the connection hubbub.transcriber.schema hands over."""

from alembic import context
from sqlalchemy import text

ADVISORY_LOCK = 0x68756262  # "hubb": replicas starting together migrate one at a time

connection = context.config.attributes["connection"]
context.configure(connection=connection, render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    if connection.dialect.name == "postgresql":
        connection.execute(text(f"SELECT pg_advisory_xact_lock({ADVISORY_LOCK})"))
    context.run_migrations()
