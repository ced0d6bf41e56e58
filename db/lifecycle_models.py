"""The storage deletion queue's table (schema.sql's "Personal data" section; db/lifecycle.py)."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, CheckConstraint, Identity, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from db.model_base import Base
from db.model_base import ts as _ts


class StorageDeletion(Base):
    """A stored object (or folder prefix) whose row was deleted, waiting for the drain
    (pipeline/privacy/drain.py)."""

    __tablename__ = "storage_deletions"
    __table_args__ = (
        CheckConstraint("NOT is_prefix OR key LIKE '%/'", name="prefix"),
        Index("ix_storage_deletions_not_before", "not_before"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    storage: Mapped[str] = mapped_column(String, nullable=False)
    bucket: Mapped[str | None] = mapped_column(String)
    key: Mapped[str] = mapped_column(String, nullable=False)
    is_prefix: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    reason: Mapped[str] = mapped_column(String, nullable=False)
    passes: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    last_error: Mapped[str | None] = mapped_column(Text)
    queued_at: Mapped[datetime] = _ts()
    not_before: Mapped[datetime] = _ts()
