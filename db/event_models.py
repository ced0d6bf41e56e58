"""The events' tables (schema.sql's events section; README "Events (webhooks)"): the outbox the
triggers write, the endpoints, one delivery per event and endpoint, and each attempt."""
from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Identity,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, TIMESTAMP, UUID
from sqlalchemy.orm import Mapped, mapped_column

from db.model_base import Base
from db.model_base import count as _count
from db.model_base import token as _token
from db.model_base import ts as _ts

_EVENT_ID = text("('evt_' || replace(gen_random_uuid()::text, '-', ''))")
_NOW = func.clock_timestamp()
_OPEN = text("status IN ('pending', 'delivering')")


class OutboxEvent(Base):
    """An event for the web app, written by a trigger with its transition (schema.sql; db/events.py)."""

    __tablename__ = "outbox_events"
    __table_args__ = (UniqueConstraint("id"),)  # (and partial indexes on story_id, order_id: schema.sql)

    seq: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    id: Mapped[str] = mapped_column(String, nullable=False, server_default=_EVENT_ID)
    type: Mapped[str] = mapped_column(String, nullable=False)
    ordering_key: Mapped[str] = mapped_column(String, nullable=False)
    story_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    order_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    photo_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    payload: Mapped[Any] = mapped_column(JSONB, nullable=False)
    occurred_at: Mapped[datetime] = mapped_column(TIMESTAMP(timezone=True), nullable=False, server_default=_NOW)


class EventEndpoint(Base):
    """A webhook URL or ``celery:<task>@<queue>``; events after ``cursor`` (seq) have deliveries."""

    __tablename__ = "event_endpoints"

    endpoint: Mapped[str] = mapped_column(String, primary_key=True)
    cursor: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default=text("0"))
    # the cursor's next position, and the xid of the run that saw it (db/events.py materialize)
    candidate: Mapped[int | None] = mapped_column(BigInteger)
    candidate_xid: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = _ts()


class EventDelivery(Base):
    """One event to one endpoint: pending -> delivering (leased) -> delivered | pending | dead."""

    __tablename__ = "event_deliveries"
    __table_args__ = (
        UniqueConstraint("event_seq", "endpoint"),
        CheckConstraint("status IN ('pending', 'delivering', 'delivered', 'dead')", name="status"),
        Index("ix_event_deliveries_open", "endpoint", "ordering_key", "event_seq", postgresql_where=_OPEN),
        Index("ix_event_deliveries_due", "next_attempt_at", postgresql_where=_OPEN),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    event_seq: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("outbox_events.seq", ondelete="CASCADE"), nullable=False)
    endpoint: Mapped[str] = mapped_column(String, nullable=False)
    ordering_key: Mapped[str] = mapped_column(String, nullable=False)
    status: Mapped[str] = mapped_column(String, nullable=False, server_default=text("'pending'"))
    attempts: Mapped[int] = _count()
    next_attempt_at: Mapped[datetime] = _ts()
    lease_until: Mapped[datetime | None] = mapped_column(TIMESTAMP(timezone=True))
    claim_token: Mapped[int] = _token()
    last_error: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[datetime | None] = mapped_column(TIMESTAMP(timezone=True))
    created_at: Mapped[datetime] = _ts()


class EventAttempt(Base):
    """One try of a delivery: the HTTP status (None without a reply), latency, error text."""

    __tablename__ = "event_attempts"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    delivery_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("event_deliveries.id", ondelete="CASCADE"), nullable=False, index=True)
    attempt: Mapped[int] = mapped_column(Integer, nullable=False)
    status_code: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _ts()
