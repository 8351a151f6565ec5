"""A final's speaker as revised, in a column of its own (it was edited inside the JSON
body with SQLite's json_set, which PostgreSQL does not have).

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    op.add_column("segments", sa.Column("speaker", sa.Text, nullable=False, server_default=""))
    if op.get_bind().dialect.name == "sqlite":
        op.execute("UPDATE segments SET speaker = COALESCE(json_extract(body, '$.speaker'), '')")
    else:
        op.execute("UPDATE segments SET speaker = COALESCE(body::json ->> 'speaker', '')")


def downgrade() -> None:
    op.drop_column("segments", "speaker")
