"""The declarative base of db.models and db.event_models: the naming convention schema.sql's
constraint names follow, and the column shapes the tables repeat (ids, timestamps, statuses,
fencing tokens)."""
from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Integer, MetaData, String, func, text
from sqlalchemy.dialects.postgresql import TIMESTAMP, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

STEP_STATUSES = ("pending", "processing", "completed", "failed")


class Base(DeclarativeBase):
    """Every table of schema.sql (db.models and db.event_models register on its metadata)."""

    metadata = MetaData(naming_convention=NAMING)


def pk() -> Mapped[uuid.UUID]:
    """A UUID primary key the database fills (gen_random_uuid())."""
    return mapped_column(UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()"))


def ts() -> Mapped[datetime]:
    """A NOT NULL timestamptz defaulting to now()."""
    return mapped_column(TIMESTAMP(timezone=True), nullable=False, server_default=func.now())


def status(default: str, nullable: bool = False) -> Mapped[Any]:
    """An indexed status column with its default value."""
    return mapped_column(String, nullable=nullable, server_default=text(f"'{default}'"), index=True)


def token() -> Mapped[int]:
    """A claim's fencing token (schema.sql: one more at every claim; writes name the one they hold)."""
    return mapped_column(BigInteger, nullable=False, server_default=text("0"))


def count() -> Mapped[int]:
    """A claim's takeover count (schema.sql: STEP_MAX_TAKEOVERS fails the step)."""
    return mapped_column(Integer, nullable=False, server_default=text("0"))
