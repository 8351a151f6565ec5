"""The store as it was when migrations began: sessions and their finals.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None


def upgrade() -> None:
    op.create_table(
        "sessions",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("created", sa.Float, nullable=False),
        sa.Column("updated", sa.Float, nullable=False),
        sa.Column("engine", sa.Text, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("audio_s", sa.Float, nullable=False, server_default="0"),
        sa.Column("last_seq", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("speaker_names", sa.Text, nullable=False, server_default="{}"),
        sa.Column("tenant", sa.Text, nullable=False, server_default="local"),
        sa.Column("token_hash", sa.Text, nullable=False, server_default=""),
        sa.Column("committed_s", sa.Float, nullable=False, server_default="0"),
    )
    op.create_table(
        "segments",
        sa.Column(
            "session_id",
            sa.Text,
            sa.ForeignKey("sessions.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("ord", sa.Integer, primary_key=True),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("id", sa.Text, nullable=False),
        sa.Column("start", sa.Float, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("relabel_seq", sa.BigInteger, nullable=False, server_default="0"),
    )


def downgrade() -> None:
    op.drop_table("segments")
    op.drop_table("sessions")
