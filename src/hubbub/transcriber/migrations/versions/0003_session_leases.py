"""Who owns a live session, until when, and who asks for it; the engine's state that a
replica taking a session over needs (its speakers' voices).

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"

COLUMNS = (
    ("owner", sa.Text, ""),
    ("lease_until", sa.Float, "0"),
    ("wanted_by", sa.Text, ""),
    ("engine_state", sa.Text, ""),
)


def upgrade() -> None:
    for name, kind, default in COLUMNS:
        op.add_column("sessions", sa.Column(name, kind, nullable=False, server_default=default))


def downgrade() -> None:
    for name, _, _ in reversed(COLUMNS):
        op.drop_column("sessions", name)
