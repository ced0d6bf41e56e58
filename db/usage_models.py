"""The cost tables' models (schema.sql's "What each book costs" section; db/usage.py)."""
from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Identity,
    Index,
    Integer,
    Numeric,
    String,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import TIMESTAMP, UUID
from sqlalchemy.orm import Mapped, mapped_column

from db.model_base import Base
from db.model_base import ts as _ts


class ProviderUsage(Base):
    """One provider call: its units and their cost in micro-cents, keyed to a story and/or order."""

    __tablename__ = "provider_usage"
    __table_args__ = (
        CheckConstraint("input_tokens >= 0 AND output_tokens >= 0 AND seconds >= 0 AND calls >= 0 "
                        "AND cost_microcents >= 0", name="units"),
        Index("ix_provider_usage_created_at", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    story_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True),
                                                       ForeignKey("stories.id", ondelete="SET NULL"))
    order_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True),
                                                       ForeignKey("orders.id", ondelete="SET NULL"))
    page_number: Mapped[int | None] = mapped_column(Integer)
    stage: Mapped[str] = mapped_column(String, nullable=False)
    provider: Mapped[str] = mapped_column(String, nullable=False)
    operation: Mapped[str] = mapped_column(String, nullable=False, server_default=text("''"))
    input_tokens: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default=text("0"))
    output_tokens: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default=text("0"))
    seconds: Mapped[Decimal] = mapped_column(Numeric(14, 3), nullable=False, server_default=text("0"))
    calls: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("1"))
    cost_microcents: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default=text("0"))
    currency: Mapped[str] = mapped_column(String(3), nullable=False, server_default=text("'usd'"))
    call_key: Mapped[str] = mapped_column(String, nullable=False, unique=True)
    created_at: Mapped[datetime] = _ts()


class BudgetHold(Base):
    """A paid call's estimated cost, held against its story's budget until the call is recorded."""

    __tablename__ = "budget_holds"
    __table_args__ = (CheckConstraint("cost_microcents >= 0", name="cost"), UniqueConstraint("story_id", "hold_key"))

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    story_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("stories.id", ondelete="CASCADE"),
                                                nullable=False)
    hold_key: Mapped[str] = mapped_column(String, nullable=False)
    provider: Mapped[str] = mapped_column(String, nullable=False)
    cost_microcents: Mapped[int] = mapped_column(BigInteger, nullable=False)
    created_at: Mapped[datetime] = _ts()
    expires_at: Mapped[datetime] = mapped_column(TIMESTAMP(timezone=True), nullable=False)
