"""The `checkpoints` table, defined with sqlmodel (libs/events/checkpoints.py keeps its rows).

The numbered SQL migrations are what creates every table, in order, on every database
(migration 0004 this one); this definition is the table's description in code, and a unit
test checks that the two agree. It lives apart from checkpoints.py so that the services,
which write and read the rows with plain SQL, do not import SQLAlchemy at start (0.6 s and
several MB in every registry and allocator).
"""

from datetime import UTC, datetime

from sqlalchemy import BigInteger, Column, DateTime, LargeBinary, Text, text
from sqlmodel import Field, SQLModel

__all__ = ["CheckpointRow"]


class CheckpointRow(SQLModel, table=True):
    """One reader's fold at one position. Migration 0004 creates this table (a unit test
    checks that the two agree): the SQL migrations are what runs, in order, on every database."""

    __tablename__ = "checkpoints"

    reader: str = Field(sa_column=Column(Text, primary_key=True))
    fold: str = Field(sa_column=Column(Text, primary_key=True))
    schema_hash: str = Field(sa_column=Column("schema", Text, primary_key=True))
    #: The modules whose source `schema_hash` covers, comma-separated.
    modules: str = Field(sa_column=Column(Text, nullable=False))
    position: int = Field(sa_column=Column(BigInteger, nullable=False))
    state: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    taken_at: datetime = Field(
        default_factory=lambda: datetime.now(UTC),
        sa_column=Column(DateTime(timezone=True), nullable=False, server_default=text("now()")),
    )
