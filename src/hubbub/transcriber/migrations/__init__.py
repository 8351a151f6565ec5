"""Alembic migrations of the transcript store (hubbub.transcriber.schema runs them)."""
